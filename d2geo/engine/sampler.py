"""Resuming the training data stream where an interrupted run left it."""
from __future__ import annotations

import itertools
import logging
from typing import Any, Callable, Mapping

import torch.utils.data as torchdata
from detectron2.config import instantiate
from detectron2.data.samplers import TrainingSampler
from detectron2.utils import comm

from .checkpoint import restore_rng_state

logger = logging.getLogger(__name__)

__all__ = ["ResumableTrainingSampler", "build_train_loader", "prepare_resume"]


class ResumableTrainingSampler(TrainingSampler):
    """detectron2's :class:`~detectron2.data.samplers.TrainingSampler` (an endless stream of
    seeded shuffles of ``range(size)``, split across processes) that can start ``start``
    samples into the stream.

    Its ``state_dict`` holds the stream's seed, so a resumed run replays the same stream even
    when the seed was drawn at random (``train.seed=-1``). :meth:`restore_rng_on_start` sets
    RNG states the moment the stream starts, i.e. inside the data loader's first fetch, just
    before the first sample is mapped: after the loader has drawn its own base seed, as it
    did in the uninterrupted run long before.
    """

    def __init__(self, size: int, shuffle: bool = True, seed: int | None = None):
        super().__init__(size, shuffle=shuffle, seed=seed)
        self.start = 0
        self._rng_on_start: Mapping[str, Any] | None = None

    def set_start(self, start: int) -> None:
        """Begin the stream after the first ``start`` samples (over all processes)."""
        if start < 0:
            raise ValueError(f"start must be >= 0, got {start}")
        self.start = int(start)

    def restore_rng_on_start(self, state: Mapping[str, Any] | None) -> None:
        self._rng_on_start = state

    def state_dict(self) -> dict[str, Any]:
        return {"seed": self._seed, "size": self._size, "shuffle": self._shuffle}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if int(state["size"]) != self._size:
            logger.warning("the checkpoint's data stream covered %d samples, this dataset has %d: "
                           "the resumed run sees a different order", int(state["size"]), self._size)
        self._seed = int(state["seed"])

    def __iter__(self):
        state, self._rng_on_start = self._rng_on_start, None
        if state is not None and torchdata.get_worker_info() is None:
            restore_rng_state(state)
        yield from itertools.islice(self._infinite_indices(), self.start + self._rank, None, self._world_size)


def _target_name(target) -> str:
    return target if isinstance(target, str) else getattr(target, "__qualname__", "")


def build_train_loader(loader_cfg, *, before: Callable[[Any, Any], None] | None = None
                       ) -> tuple[Any, ResumableTrainingSampler | None]:
    """Instantiate a ``dataloader.train`` LazyConfig; when it is a
    ``build_detection_train_loader`` over a map-style dataset without a sampler of its own,
    give it a :class:`ResumableTrainingSampler`. Returns ``(loader, sampler or None)``.

    ``before(dataset, mapper)`` is called with the instantiated dataset and mapper before the
    loader is built (the units check, :mod:`d2geo.engine.units_check`); each is instantiated once."""
    target = loader_cfg.get("_target_", None) if hasattr(loader_cfg, "get") else None
    if (_target_name(target).endswith("build_detection_train_loader")
            and loader_cfg.get("sampler", None) is None and "dataset" in loader_cfg):
        dataset = instantiate(loader_cfg.dataset)
        if not isinstance(dataset, torchdata.IterableDataset) and hasattr(dataset, "__len__"):
            sampler = ResumableTrainingSampler(len(dataset))
            args = {k: loader_cfg[k] for k in loader_cfg.keys()}
            args.update(dataset=dataset, sampler=sampler)
            if before is not None:
                args["mapper"] = instantiate(loader_cfg.get("mapper", None))
                before(dataset, args["mapper"])
            return instantiate(args), sampler
    if before is not None and hasattr(loader_cfg, "get") and "dataset" in loader_cfg and "mapper" in loader_cfg:
        args = {k: loader_cfg[k] for k in loader_cfg.keys()}
        args.update(dataset=instantiate(loader_cfg.dataset), mapper=instantiate(loader_cfg.mapper))
        before(args["dataset"], args["mapper"])
        loader_cfg = args
    elif before is not None:
        logger.warning("dataloader.train has no dataset and mapper to read samples from: the units "
                       "check of the training data is skipped")
    logger.warning("dataloader.train is not a build_detection_train_loader over a map-style dataset "
                   "with the default sampler: --resume restores the weights, optimizer and schedule, "
                   "but not the position in the data stream")
    return instantiate(loader_cfg), None


def prepare_resume(sampler: ResumableTrainingSampler | None, *, start_iter: int,
                   total_batch_size: int, rng_state: Mapping[str, Any] | None) -> None:
    """Make a resumed run continue the interrupted one: skip the ``start_iter *
    total_batch_size`` samples it used, and restore its RNG states (one process only)."""
    if sampler is not None:
        sampler.set_start(start_iter * total_batch_size)
    if rng_state is None:
        logger.warning("the checkpoint holds no RNG states: augmentations after the resume differ "
                       "from the uninterrupted run's")
        return
    if comm.get_world_size() > 1:
        logger.info("resuming %d processes: each keeps its own seeded RNG (the checkpoint holds "
                    "process 0's)", comm.get_world_size())
        return
    restore_rng_state(rng_state)
    if sampler is not None:
        # again at the first fetch, after the loader drew its base seed (with num_workers=0
        # the samples are mapped in this process, from these states)
        sampler.restore_rng_on_start(rng_state)
