"""Run one of detectron2's own command-line tools on d2geo yaml configs.

``python -m d2geo.engine.run_tool /path/to/detectron2/tools/deploy/export_model.py ARGS``

detectron2's tools never import d2geo, so a yacs config naming ``GeoRCNN`` or holding a
``MODEL.D2GEO`` section fails there (``Non-existent config key: MODEL.D2GEO``). This
runner imports :mod:`d2geo.modeling` (its registries), adds d2geo's sections to
detectron2's defaults (:func:`~d2geo.modeling.config.register_d2geo_defaults`) and runs the
tool as ``__main__`` with the remaining arguments.

Limits of the upstream tools with geospatial data: they read images with PIL
(``--sample-image`` must be a PNG/JPEG the model's bands fit, i.e. RGB models) and their
data loaders use detectron2's ``DatasetMapper``. For GeoTIFFs use d2geo's
``tools/export_model.py`` and :class:`~d2geo.engine.GeoTrainer`.
"""
from __future__ import annotations

import runpy
import sys


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        raise SystemExit(0 if argv else 2)
    import d2geo.modeling  # noqa: F401  (META_ARCH / BACKBONE registries)
    from d2geo.modeling.config import register_d2geo_defaults

    register_d2geo_defaults()
    script = argv[0]
    sys.argv = [script, *argv[1:]]
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
