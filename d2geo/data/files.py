"""Output files that appear complete or not at all."""
from __future__ import annotations

import contextlib
import os
import tempfile
from typing import Iterator

__all__ = ["atomic_path", "TMP_MARK"]

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
    directory = os.path.dirname(os.path.abspath(path))
    base = os.path.basename(path)
    ext = os.path.splitext(base)[1]
    fd, tmp = tempfile.mkstemp(prefix=f".{base}.", suffix=TMP_MARK + ext, dir=directory)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        for leftover in (tmp, tmp + ".aux.xml"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(leftover)
