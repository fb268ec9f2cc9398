"""Hub files fetched from a moving revision (a branch such as ``main``, or a tag), remembered
so that they cannot change under a user silently.

A pretrained entry is pinned to a commit wherever a public source states one; a few
publishers state none (``unpinned_reason`` in their table entries), and users may pass
``hf://org/repo/file`` themselves. For those, the first download on a machine records the
commit the branch pointed at and the file's sha256 in ``$D2GEO_CACHE/first-seen.json``
(default ``~/.cache/d2geo``) and logs them with the ``@<commit>`` form that pins them. A later
resolution of the same ``hf://`` path that gives another file (the publisher replaced it, as
TerraMind's tiny file was in 2025) is refused with both commits named, instead of loading
other weights under the same name. The model a user trains records the commit and sha256 it
started from (:func:`resolved_identity`, read by :mod:`d2geo.encoders.licenses`).
"""
from __future__ import annotations

import datetime
import json
import logging
import os
import re
import tempfile

from .hub_common import _SHA256, ChecksumMismatchError, _recorded_digest, sha256_of

logger = logging.getLogger("d2geo.encoders.hub")

__all__ = ["is_moving_revision", "remember_moving", "resolved_identity", "first_seen_path"]

_COMMIT = re.compile(r"^[0-9a-f]{40}$")
#: realpath of a resolved file -> {"commit", "sha256", "uri"} (this process)
_RESOLVED: dict[str, dict] = {}
_LOGGED: set[str] = set()


def is_moving_revision(revision: str | None) -> bool:
    """Whether ``revision`` can point at other content later (anything but a full commit hash)."""
    return not (revision and _COMMIT.match(revision))


def first_seen_path() -> str:
    root = os.environ.get("D2GEO_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "d2geo")
    return os.path.join(root, "first-seen.json")


def _commit_of(path: str, filename: str) -> str | None:
    """The commit of ``.../snapshots/<commit>/<filename>`` (huggingface_hub's cache layout)."""
    snapshot = os.path.abspath(path)
    for _ in filename.split("/"):
        snapshot = os.path.dirname(snapshot)
    name = os.path.basename(snapshot)
    parent = os.path.basename(os.path.dirname(snapshot))
    return name if parent == "snapshots" and _COMMIT.match(name) else None


def _digest(path: str) -> str:
    blob = os.path.realpath(path)
    oid = os.path.basename(blob)
    if _SHA256.match(oid):  # an LFS blob is named by its sha256 (already verified by the caller)
        return oid
    return _recorded_digest(blob) or sha256_of(blob)


def _read(record_path: str) -> dict:
    try:
        with open(record_path) as fh:
            data = json.load(fh)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raise ChecksumMismatchError(
            f"{record_path}: d2geo's record of the Hub files first used from a moving revision cannot be read "
            f"({type(e).__name__}: {e}). Fix or delete the file (deleting it forgets which files were used)") from e
    return data if isinstance(data, dict) else {}


def _write(record_path: str, data: dict) -> None:
    os.makedirs(os.path.dirname(record_path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(record_path), prefix=".first-seen-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=1, sort_keys=True)
        os.replace(tmp, record_path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def remember_moving(uri: str, repo_id: str, filename: str, revision: str | None, path: str) -> dict:
    """Record (first time) or check (later) the file ``uri`` resolved to, for a moving revision.

    Returns ``{"uri", "commit", "sha256"}``; raises :class:`ChecksumMismatchError` when the
    revision now gives another file than the one first used on this machine.
    """
    identity = dict(uri=uri, commit=_commit_of(path, filename), sha256=_digest(path))
    _RESOLVED[os.path.realpath(path)] = identity
    record_path = first_seen_path()
    data = _read(record_path)
    seen = data.get(uri)
    rev = revision or "main"
    if seen is None:
        data[uri] = dict(commit=identity["commit"], sha256=identity["sha256"],
                         first_used=datetime.date.today().isoformat())
        _write(record_path, data)
    elif seen.get("sha256") != identity["sha256"]:
        old, new = seen.get("commit"), identity["commit"]
        keep = f"hf://{repo_id}@{old}/{filename}" if old else "the file you kept"
        use = f"hf://{repo_id}@{new}/{filename}" if new else uri
        raise ChecksumMismatchError(
            f"{uri}: the file at the moving revision '{rev}' changed since it was first used here on "
            f"{seen.get('first_used', '?')}: it was sha256 {seen.get('sha256')} (commit {old}), it is now "
            f"sha256 {identity['sha256']} (commit {new}). d2geo does not swap weights under the same name. "
            f"To keep the weights you used: weights='{keep}'; to take the new file: weights='{use}' (or "
            f"delete the entry {uri!r} from {record_path})")
    if uri not in _LOGGED:
        _LOGGED.add(uri)
        logger.warning(
            "%s follows the moving revision '%s'; this is commit %s, sha256 %s (recorded in %s: a later change "
            "of the file is refused). To pin exactly this file write hf://%s@%s/%s", uri, rev,
            identity["commit"] or "unknown", identity["sha256"], record_path, repo_id,
            identity["commit"] or "<commit>", filename)
    return identity


def resolved_identity(path) -> dict | None:
    """``{"uri", "commit", "sha256"}`` of a file this process resolved from a moving revision."""
    if not isinstance(path, (str, os.PathLike)):
        return None
    return _RESOLVED.get(os.path.realpath(os.fspath(path)))
