"""Output files that appear complete or not at all.

Every writer of d2geo goes through here: :func:`atomic_path` for libraries that write to a
path (rasterio, PIL, json), :func:`atomic_write` for a file object (``torch.save``; the
training checkpoints of :mod:`d2geo.engine`). Either writes a temporary file beside the
target and renames it into place, so a reader of the target sees the old file or the
complete new one, never a partial one, whenever the writer dies.
"""
from __future__ import annotations

import contextlib
import glob
import logging
import os
import secrets
import stat
from typing import IO, Any, Callable, Iterator

logger = logging.getLogger(__name__)

__all__ = [
    "atomic_path", "atomic_write", "atomic_torch_save", "atomic_write_text", "remove_stale_temporaries",
    "TMP_MARK", "new_temporary",
]

#: part of the name of every temporary output file (``.<name>.<random>.d2geo-tmp<ext>``)
TMP_MARK = ".d2geo-tmp"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary path beside ``path`` to write to; rename it to ``path`` when the block
    ends normally, delete it when the block raises (also ``KeyboardInterrupt``).

    The temporary name keeps the extension (drivers that guess the format from it still
    work) and starts with a dot. A reader of ``path`` sees the old file or the complete new
    one, never a partial one.
    """
    path = os.fspath(path)
    tmp = new_temporary(path)
    try:
        yield tmp
        _keep_mode(tmp, path)
        os.replace(tmp, path)
    finally:
        for leftover in (tmp, tmp + ".aux.xml"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(leftover)


def new_temporary(path: str | os.PathLike) -> str:
    """Create an empty temporary file beside ``path`` (``.<name>.<random>.d2geo-tmp<ext>``) and
    return its name. It is created as ``open(path, "w")`` would create ``path``: mode 0666 less
    the process umask (``tempfile.mkstemp`` gives 0600, which other users of a shared model
    zoo or output folder cannot read)."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    base = os.path.basename(path)
    ext = os.path.splitext(base)[1]
    for _ in range(100):
        tmp = os.path.join(directory, f".{base}.{secrets.token_hex(4)}{TMP_MARK}{ext}")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(f"could not create a temporary file beside {path}")


def _keep_mode(tmp: str, path: str) -> None:
    """Give ``tmp`` the mode that writing ``path`` in place would leave: an existing file keeps
    its mode; a new one has the mode it was created with (0666 less the umask)."""
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        return
    with contextlib.suppress(OSError):
        os.chmod(tmp, mode)


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], Any]) -> None:
    """Call ``write`` with a binary file object and put what it wrote at ``path`` durably:
    as :func:`atomic_path`, with the file fsynced before the rename and the directory after
    it (for checkpoints, which must survive a power cut as well as a killed process)."""
    path = os.fspath(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
    _fsync_dir(os.path.dirname(os.path.abspath(path)))


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save(obj, path)`` through :func:`atomic_write`."""
    import torch

    atomic_write(path, lambda f: torch.save(obj, f))


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write a small UTF-8 text file through :func:`atomic_write`."""
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def remove_stale_temporaries(directory: str | os.PathLike) -> list[str]:
    """Delete the temporary files that writers killed in ``directory`` left behind (what the
    ``finally`` of :func:`atomic_path` never ran for); returns their paths."""
    removed = []
    for stale in glob.glob(os.path.join(os.fspath(directory), f".*{TMP_MARK}*")):
        logger.info("removing %s, left by a write that did not finish", stale)
        with contextlib.suppress(OSError):
            os.unlink(stale)
            removed.append(stale)
    return removed


def _fsync_dir(directory: str) -> None:
    """Make a rename in ``directory`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
