"""Training hooks: stop cleanly on Ctrl-C with a checkpoint of the last finished iteration.

:class:`StopOnCtrlC` is registered by :func:`d2geo.engine.train_loop.do_train`; the command
line (``d2geo-train`` / ``tools/train_net.py``) catches :class:`TrainingInterrupted` and
prints where the checkpoint is and how to continue.
"""
from __future__ import annotations

import logging
import os
import signal
import threading

from detectron2.engine import hooks
from detectron2.utils import comm

__all__ = ["TrainingInterrupted", "StopOnCtrlC", "threading_is_main", "last_checkpoint"]

logger = logging.getLogger(__name__)


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C, after the checkpoint of the last finished iteration was written."""

    def __init__(self, iteration: int, checkpoint: str | None):
        super().__init__(iteration, checkpoint)
        self.iteration, self.checkpoint = iteration, checkpoint


class StopOnCtrlC(hooks.HookBase):
    """The first Ctrl-C lets the running iteration finish, writes a checkpoint of it (the same
    kind as the periodic ones, so ``--resume`` continues exactly there) and stops training;
    a second Ctrl-C stops at once. Only in a single process (several processes stop with the
    last periodic checkpoint)."""

    def __init__(self, checkpointer):
        self.checkpointer = checkpointer
        self.requested = False
        self._previous = None

    def _handler(self, signum, frame):
        # No I/O here: the signal may arrive while the main thread is inside a write to the
        # same log file, and a second write from the handler would raise "reentrant call".
        if self.requested:  # the second Ctrl-C
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt
        self.requested = True

    def before_train(self):
        if comm.get_world_size() == 1 and threading_is_main():
            self._previous = signal.signal(signal.SIGINT, self._handler)

    def after_step(self):
        if self.requested:
            logger.warning("Ctrl-C: iteration %d finished, writing its checkpoint (Ctrl-C again to stop at once)",
                           self.trainer.iter)
            name = f"model_{self.trainer.iter:07d}"
            self.checkpointer.save(name, iteration=self.trainer.iter)
            raise TrainingInterrupted(self.trainer.iter, os.path.join(self.checkpointer.save_dir, f"{name}.pth"))

    def after_train(self):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None


def threading_is_main() -> bool:
    return threading.current_thread() is threading.main_thread()


def last_checkpoint(output_dir: str | None) -> str | None:
    """The checkpoint ``output_dir/last_checkpoint`` names, or None."""
    if not output_dir:
        return None
    try:
        with open(os.path.join(output_dir, "last_checkpoint"), encoding="utf-8") as f:
            return os.path.join(output_dir, f.read().strip())
    except OSError:
        return None
