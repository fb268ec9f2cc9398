"""What ``hf://`` (:mod:`d2geo.encoders.hub`) and ``https://`` (:mod:`d2geo.encoders.hub_url`)
weights share: the errors, the sha256 of a file and the memory of earlier verifications,
torch.hub's checkpoint folder, and the quieting of huggingface_hub's progress bars and retries.

Both modules import this one and it imports neither; every public name here is also importable
from :mod:`d2geo.encoders.hub`.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re

from .checkpoint import CheckpointError

# the logger of d2geo.encoders.hub, where these lines were logged before this module existed
logger = logging.getLogger("d2geo.encoders.hub")

__all__ = [
    "WeightsDownloadError", "ChecksumMismatchError", "ManualDownloadError", "sha256_of",
    "torch_hub_checkpoint_dir",
]

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_TRUE = {"1", "on", "yes", "true"}


class WeightsDownloadError(CheckpointError, OSError):
    """Published weights that could not be fetched (offline, missing, refused)."""


class ChecksumMismatchError(WeightsDownloadError):
    """A downloaded file whose sha256 differs from the one it must have."""


class ManualDownloadError(WeightsDownloadError):
    """Weights shared where only a browser can fetch them: download by hand, pass the path."""


def sha256_of(path: str, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def torch_hub_checkpoint_dir() -> str:
    """``$TORCH_HOME/hub/checkpoints``, torch.hub's own cache of URL downloads."""
    import torch.hub

    return os.path.join(torch.hub.get_dir(), "checkpoints")


@contextlib.contextmanager
def _progress_bars(show: bool):
    """huggingface_hub's progress bars (shown by default), off for ``show=False``."""
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    turn_off = not show and not are_progress_bars_disabled()
    if turn_off:
        disable_progress_bars()
    try:
        yield
    finally:
        if turn_off:
            enable_progress_bars()


class _RetryNotes(logging.Filter):
    """Drops huggingface_hub's per-try lines ("... thrown while requesting", "Retrying in
    1s [Retry 1/5]"), which its own handler and the root logger both print, and logs one
    line instead; the failure itself is reported once, by the error d2geo raises."""

    def __init__(self):
        super().__init__()
        self.noted = False

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        if record.levelno > logging.WARNING or not ("thrown while requesting" in msg or "[Retry " in msg):
            return True
        if not self.noted:
            self.noted = True
            logger.info("the server does not answer (%s); trying again for up to half a minute",
                        msg.split(" thrown while")[0].strip("'"))
        return False


@contextlib.contextmanager
def _quiet_retries():
    http_logger = logging.getLogger("huggingface_hub.utils._http")
    notes = _RetryNotes()
    http_logger.addFilter(notes)
    try:
        yield
    finally:
        http_logger.removeFilter(notes)


_VERIFIED: dict[str, tuple] = {}


def _stamp(path: str) -> tuple:
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns, st.st_ino


def _marker(path: str) -> str:
    """Where the verification of ``path`` is remembered across processes (hashing a 5 GB
    checkpoint takes half a minute): ``$D2GEO_CACHE/verified`` (default ``~/.cache/d2geo``)."""
    root = os.environ.get("D2GEO_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "d2geo")
    return os.path.join(root, "verified", hashlib.sha256(os.path.abspath(path).encode()).hexdigest())


def _recorded_digest(path: str) -> str | None:
    """The sha256 an earlier verification of ``path`` recorded (None if there is none)."""
    try:
        with open(_marker(path)) as f:
            found = f.read().split()
    except OSError:
        return None
    return found[-1] if found and _SHA256.match(found[-1]) else None


def _already_verified(path: str, expected: str) -> bool:
    """Whether ``path`` was hashed to ``expected`` and has not changed since (size, mtime, inode)."""
    record = (_stamp(path), expected)
    if _VERIFIED.get(path) == record:
        return True
    try:
        with open(_marker(path)) as f:
            found = f.read().split()
    except OSError:
        return False
    if found == [*map(str, record[0]), expected]:
        _VERIFIED[path] = record
        return True
    return False


def _mark_verified(path: str, expected: str) -> None:
    record = (_stamp(path), expected)
    _VERIFIED[path] = record
    marker = _marker(path)
    try:
        os.makedirs(os.path.dirname(marker), exist_ok=True)
        tmp = f"{marker}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            f.write(" ".join([*map(str, record[0]), expected]))
        os.replace(tmp, marker)
    except OSError as e:  # a read-only home: verify again next time
        logger.debug("could not record the verification of %s: %s", path, e)
