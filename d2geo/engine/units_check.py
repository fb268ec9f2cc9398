"""The units check before the first training step (:mod:`d2geo.data.units`).

Before any step, the first :data:`~d2geo.data.units.NUM_SAMPLES` samples (windows) of the
training dataset are read by the training mapper (before augmentation and normalization)
and compared with the statistics the model normalizes with: the mapper's own ``mean``/``std``
when it normalizes, else the model's ``pixel_mean``/``pixel_std``. Data in other units (raw DN
for reflectance statistics, an 8-bit rendering, SAR in linear power for dB, ...) stop the run
with :class:`~d2geo.data.units.UnitsError` naming the fix.

Switch it off with ``train.units_check=False`` (LazyConfig; ``tools/train_net.py
--skip-units-check`` does the same) or ``INPUT.GEO.UNITS_CHECK False`` (yacs,
:class:`~d2geo.engine.GeoTrainer`): the mismatch is then logged as a warning and training goes on.
"""
from __future__ import annotations

import logging

from ..data.units import NUM_SAMPLES, UnitsReport, check_dataset_units, model_statistics

logger = logging.getLogger(__name__)

__all__ = ["check_training_units"]


def check_training_units(model, dataset, mapper, *, enabled: bool = True,
                         num_samples: int = NUM_SAMPLES) -> UnitsReport | None:
    """Run the units check on the first ``num_samples`` dicts of ``dataset`` (read by ``mapper``)
    against ``model``'s statistics; raises :class:`~d2geo.data.units.UnitsError` on a mismatch
    unless ``enabled`` is False (then it warns). Returns the report, or None when the mapper
    cannot read raw samples (not a GeoDatasetMapper) or the model has no statistics."""
    if not hasattr(mapper, "read_unnormalized"):
        logger.info("units check skipped: the training mapper %s is not a GeoDatasetMapper",
                    type(mapper).__name__)
        return None
    stats = model_statistics(model, mapper)
    if stats is None:
        logger.info("units check skipped: %s has no pixel_mean/pixel_std", type(getattr(model, "module", model)).__name__)
        return None
    try:
        size = len(dataset)
    except TypeError:
        logger.info("units check skipped: the training dataset has no length (an iterable dataset)")
        return None
    if size == 0:
        return None
    report = check_dataset_units(dataset, mapper, mean=stats[0], std=stats[1], num_samples=num_samples,
                                 allow=not enabled)
    if report.ok and report.judged:
        logger.info("units check passed: %s fit the model's statistics", report.source)
    return report
