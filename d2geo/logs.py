"""Log files without terminal colour codes: detectron2's ``default_setup`` logs the config
highlighted for the console, and its ``setup_logger`` writes the same records to ``log.txt``."""
from __future__ import annotations

import logging
import re
import sys
from typing import Sequence

_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


class _PlainFormatter(logging.Formatter):
    """A file handler's own formatter, with the ANSI escape codes taken out of its lines."""

    def __init__(self, inner: logging.Formatter):
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        return _ANSI.sub("", self.inner.format(record))


def _writes_a_file(handler: logging.Handler) -> bool:
    if isinstance(handler, logging.FileHandler):
        return True
    stream = getattr(handler, "stream", None)  # detectron2's log.txt: a StreamHandler on an open file
    name = getattr(stream, "name", None)
    return isinstance(name, str) and not name.startswith("<") and stream not in (sys.stdout, sys.stderr)


def _plain_file_handlers(logger: logging.Logger) -> None:
    for handler in logger.handlers:
        if _writes_a_file(handler) and not isinstance(handler.formatter, _PlainFormatter):
            handler.setFormatter(_PlainFormatter(handler.formatter or logging.Formatter()))


class _PlainFiles(logging.Filter):
    """On a logger: before each record it logs reaches the handlers, the file handlers added
    since (detectron2's ``setup_logger`` adds them) to any of ``names`` get the plain formatter."""

    def __init__(self, names: Sequence[str]):
        super().__init__()
        self.names = tuple(names)

    def filter(self, record: logging.LogRecord) -> bool:
        for name in self.names:
            _plain_file_handlers(logging.getLogger(name))
        return True


def plain_log_files(*names: str) -> None:
    """Log files written through the loggers ``names`` (and their handlers added later, e.g. by
    detectron2's ``default_setup``, which logs the config highlighted in terminal colours) get
    plain text; the console keeps its colours. Call before the handlers are set up. Idempotent."""
    for name in names:
        logger = logging.getLogger(name)
        _plain_file_handlers(logger)
        if not any(isinstance(f, _PlainFiles) and f.names == names for f in logger.filters):
            logger.addFilter(_PlainFiles(names))
