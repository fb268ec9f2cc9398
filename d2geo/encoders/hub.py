"""Weights by name: ``hf://`` and ``https://`` sources, downloaded, verified and cached.

Accepted wherever d2geo takes weights (``build_encoder(weights=...)``, ``GeoBackbone``,
``tools/convert_checkpoint.py``, ``train.init_checkpoint`` through detectron2's
``PathManager``):

* ``hf://<org>/<repo>[@<revision>]/<path in repo>``: a file of a Hugging Face model
  repository, fetched with ``huggingface_hub.hf_hub_download``. A revision is a commit hash,
  a tag or a branch, ``refs/pr/<N>`` or ``refs/convert/<name>``; a branch or tag with '/' in
  its name is written with ``%2F`` (``@feature%2Fx``), other revisions with '/' are refused. Its usual settings apply:
  ``HF_ENDPOINT`` (a mirror), ``HF_HUB_CACHE`` / ``HF_HOME`` (the cache), ``HF_HUB_OFFLINE=1``
  (cache only), ``HF_TOKEN`` (gated or private repositories). They are read when a file is
  resolved, so setting them after ``import d2geo`` works too.
* ``https://...`` (or ``http://``): fetched into
  ``$TORCH_HOME/hub/checkpoints/by-url/<key>/<file name>``, ``<key>`` a digest of the whole
  URL (two URLs with the same file name are two files). A file of that name directly in
  ``$TORCH_HOME/hub/checkpoints`` (where ``torch.hub.load_state_dict_from_url`` and earlier
  d2geo versions kept them, by name only) is reused only when it matches the pinned
  sha256. ``HF_HUB_OFFLINE=1`` means cache only here too.
* anything else is a local path and is returned unchanged.

Some publishers share weights only where a browser is needed (Google Drive answers download
clients with a confirmation page instead of the file): such URLs are refused with
:class:`ManualDownloadError`, which says to download the file by hand and pass its path.

Verification: a file is checked against ``sha256`` when one is given (the pretrained
tables pin the digests their publishers state). Without a pin, a Hub file stored with
Git LFS is checked against the sha256 the Hub reports for it (its LFS object id, which
names the cached blob). A file that does not match is deleted from the cache and refused
with :class:`ChecksumMismatchError`, so a later run downloads it again instead of trusting
it. Downloads land in temporary files that only become the cached file once complete
and whose size matches what the server announced, so an interrupted download leaves
nothing that is taken for the file.

This module needs no detectron2; the ``hf://`` handler for detectron2's ``PathManager`` is
in :mod:`d2geo.model_zoo.checkpoints`.
"""
from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
import urllib.parse
from urllib.parse import urlparse

from .hub_common import (  # noqa: F401  (public names re-exported; tests patch sha256_of here)
    _SHA256,
    _TRUE,
    ChecksumMismatchError,
    ManualDownloadError,
    WeightsDownloadError,
    _already_verified,
    _mark_verified,
    _progress_bars,
    _quiet_retries,
    _recorded_digest,
    sha256_of,
    torch_hub_checkpoint_dir,
)
from .hub_moving import is_moving_revision, remember_moving
from .hub_url import resolve_url, url_cache_path  # noqa: F401  (https:// files)

logger = logging.getLogger(__name__)

__all__ = [
    "HF_PREFIX", "HFFile", "WeightsDownloadError", "ChecksumMismatchError", "ManualDownloadError",
    "parse_hf_uri", "is_remote", "needs_manual_download", "resolve_weights", "sha256_of",
    "torch_hub_checkpoint_dir", "url_cache_path",
]

HF_PREFIX = "hf://"
_REPO_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")

#: hosts that answer download clients with an interactive page instead of the file
MANUAL_DOWNLOAD_HOSTS = ("drive.google.com", "docs.google.com")


@dataclass(frozen=True)
class HFFile:
    """One file of a Hugging Face model repository."""

    repo_id: str
    filename: str
    revision: str | None = None

    @property
    def uri(self) -> str:
        return f"{HF_PREFIX}{self.repo_id}{_revision_text(self.revision)}/{self.filename}"


#: the Hub's revisions that contain '/' and are written as they are: pull requests and conversions
_SLASHED_REVISION = re.compile(r"^refs/(pr/[0-9]+|convert/[A-Za-z0-9][A-Za-z0-9._-]*)$")
_GRAMMAR = ("write hf://<org>/<repo>[@<revision>]/<file in repo>, e.g. "
            "hf://ibm-nasa-geospatial/Prithvi-EO-2.0-300M-TL/Prithvi_EO_V2_300M_TL.pt. A revision is a "
            "commit hash, a tag, a branch, refs/pr/<N> (a pull request) or refs/convert/<name>; a branch or "
            "tag whose name contains '/' is written with %2F for each '/' (@feature%2Fx for feature/x)")


def _revision_text(revision: str | None) -> str:
    if not revision:
        return ""
    if _SLASHED_REVISION.match(revision):
        return f"@{revision}"
    return "@" + revision.replace("%", "%25").replace("/", "%2F")


def parse_hf_uri(uri: str) -> HFFile:
    """Split ``hf://org/repo[@revision]/path/in/repo``.

    Revisions are the Hub's: a 40-hex commit, a tag or branch name, ``refs/pr/<N>`` (a pull
    request), ``refs/convert/<name>``; a branch or tag with '/' in its name is written with
    ``%2F`` (``@feature%2Fx``), so where the revision ends is never a guess. Other revisions
    with '/' (``@refs/heads/x/...``) are refused with this grammar.
    """
    if not uri.startswith(HF_PREFIX):
        raise ValueError(f"{uri!r} is not an hf:// path")
    rest = uri[len(HF_PREFIX):]
    parts = rest.split("/")
    bad = (len(parts) < 3 or any(p in ("", ".", "..") for p in parts) or "\\" in rest
           or "?" in rest or "#" in rest)
    why = ""
    if not bad:
        org, repo_rev, *path = parts
        repo, at, revision = repo_rev.partition("@")
        bad = not (_REPO_PART.match(org) and _REPO_PART.match(repo)) or (repo_rev.endswith("@"))
        if not bad and revision == "refs":
            slashed = next((f"refs/{'/'.join(path[:n])}" for n in (2, 3)
                            if _SLASHED_REVISION.match(f"refs/{'/'.join(path[:n])}")), None)
            if slashed is not None and slashed.count("/") >= len(path):
                bad, why = True, f"no file is named after the revision @{slashed}"
            elif slashed is None:
                bad, why = True, (f"the revision @refs/{'/'.join(path[:-1])} is none of the Hub's "
                                  f"refs/pr/<N> or refs/convert/<name> (for a branch or tag give its name, "
                                  f"or give the commit hash)")
            else:
                revision, path = slashed, path[slashed.count("/"):]
        elif not bad and revision:
            revision = urllib.parse.unquote(revision)
            bad = not revision or revision.startswith("/") or revision.endswith("/") or "//" in revision
    if bad:
        raise ValueError(f"{uri!r} is not a valid hf:// path{': ' + why if why else ''}: {_GRAMMAR}")
    return HFFile(f"{org}/{repo}", "/".join(path), revision or None)


def is_remote(source) -> bool:
    """Whether ``source`` names a file to download (``hf://``, ``http(s)://``)."""
    return isinstance(source, str) and (source.startswith(HF_PREFIX) or source.startswith(("https://", "http://")))


def needs_manual_download(source) -> bool:
    """Whether ``source`` is a URL on a host that no download client can fetch files from."""
    return (isinstance(source, str) and source.startswith(("https://", "http://"))
            and (urlparse(source).hostname or "").lower() in MANUAL_DOWNLOAD_HOSTS)


def manual_download_hint(url: str) -> str:
    """How to get a file that must be downloaded by hand."""
    return (f"open {url} in a browser, download the file, and pass its local path as weights= (with "
            f"pretrained=True, weights= replaces the published source; in a config set "
            f"model.backbone.net.weights to the path)")


def resolve_weights(source, *, sha256: str | None = None, progress: bool = True):
    """The local path of ``source``, downloading (and verifying) it first if it is remote.

    Args:
        source: an ``hf://`` path, an ``http(s)://`` URL or a local path (returned as is;
            mappings and other objects pass through too).
        sha256: the digest the file must have (lower-case hex); ``None`` where none is
            published.
    """
    if sha256 is not None and not _SHA256.match(sha256):
        raise ValueError(f"sha256 must be 64 lower-case hex digits, got {sha256!r}")
    if isinstance(source, os.PathLike):
        return os.fspath(source)
    if not isinstance(source, str):
        return source
    if source.startswith(HF_PREFIX):
        return _resolve_hf(parse_hf_uri(source), sha256, progress)
    if needs_manual_download(source):
        raise ManualDownloadError(
            f"{source}: {urlparse(source).hostname} answers download clients with a confirmation page, "
            f"not the file, so d2geo cannot fetch it: {manual_download_hint(source)}")
    if source.startswith(("https://", "http://")):
        return resolve_url(source, sha256, progress)
    return os.path.expanduser(source)


# -- Hugging Face Hub ------------------------------------------------------------------------
def _hf_settings() -> dict:
    """huggingface_hub reads its environment at import; read it again at call time."""
    from huggingface_hub import constants

    endpoint = os.environ.get("HF_ENDPOINT") or None
    cache = os.environ.get("HF_HUB_CACHE")
    if not cache and os.environ.get("HF_HOME"):
        cache = os.path.join(os.path.expanduser(os.environ["HF_HOME"]), "hub")
    offline = (os.environ.get("HF_HUB_OFFLINE", "").lower() in _TRUE) or constants.HF_HUB_OFFLINE
    return dict(endpoint=endpoint.rstrip("/") if endpoint else None,
                cache_dir=os.path.expanduser(cache) if cache else constants.HF_HUB_CACHE,
                offline=offline)


def _place_by_hand(f: HFFile, cache_dir: str) -> str:
    rev = f" --revision {f.revision}" if f.revision else ""
    return (f"on a connected machine run `hf download {f.repo_id} {f.filename}{rev}` (with the same "
            f"HF_HUB_CACHE, currently {cache_dir}) and copy that cache here, or download the file from "
            f"https://huggingface.co/{f.repo_id} by hand and pass its local path as weights=")


def _resolve_hf(f: HFFile, sha256: str | None, progress: bool) -> str:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    s = _hf_settings()
    kwargs = dict(repo_id=f.repo_id, filename=f.filename, revision=f.revision, cache_dir=s["cache_dir"],
                  endpoint=s["endpoint"], local_files_only=s["offline"], library_name="d2geo")
    try:
        with _progress_bars(progress), _quiet_retries():
            path = hf_hub_download(**kwargs)
    except GatedRepoError as e:
        raise WeightsDownloadError(
            f"{f.uri}: {f.repo_id} is gated: accept its terms on https://huggingface.co/{f.repo_id} "
            f"and set HF_TOKEN (or run `hf auth login`)") from e
    except RepositoryNotFoundError as e:
        raise WeightsDownloadError(
            f"{f.uri}: no repository {f.repo_id} at {s['endpoint'] or 'huggingface.co'} (or it is "
            f"private: set HF_TOKEN)") from e
    except RevisionNotFoundError as e:
        raise WeightsDownloadError(f"{f.uri}: {f.repo_id} has no revision {f.revision!r}{_slash_hint(f)}") from e
    except EntryNotFoundError as e:
        if isinstance(e, LocalEntryNotFoundError):
            cached = _pinned_blob(f, sha256, s["cache_dir"])
            if cached is not None:  # e.g. cached from another revision: the same content
                return cached
            why = ("HF_HUB_OFFLINE is set and it is not in the cache" if s["offline"] else
                   "the Hub could not be reached and it is not in the cache")
            raise WeightsDownloadError(
                f"{f.uri}: {why} ({s['cache_dir']}, looked for {f.repo_id} / {f.filename} at revision "
                f"{f.revision or 'main'}). To place it by hand: {_place_by_hand(f, s['cache_dir'])}"
            ) from e
        raise WeightsDownloadError(f"{f.uri}: {f.repo_id} has no file {f.filename!r}{_slash_hint(f)}") from e
    except Exception as e:  # connection errors, interrupted downloads (httpx errors), size mismatches
        raise WeightsDownloadError(
            f"{f.uri}: the download failed ({type(e).__name__}: {e}); nothing was kept, try again. "
            f"To place it by hand: {_place_by_hand(f, s['cache_dir'])}") from e
    _verify_hf(path, f, sha256, s)
    if sha256 is None and is_moving_revision(f.revision):  # no pin: remember the file, refuse a swap
        remember_moving(f.uri, f.repo_id, f.filename, f.revision, path)
    return path


def _pinned_blob(f: HFFile, sha256: str | None, cache_dir: str) -> str | None:
    """The cached blob of the repository whose name is the pinned sha256 (huggingface_hub names
    LFS blobs by it), when the file is not cached at the asked revision (an earlier download
    at another revision, ``main``): its content is the pinned file's, checked by hashing."""
    from huggingface_hub.file_download import repo_folder_name

    if sha256 is None:
        return None
    blob = os.path.join(cache_dir, repo_folder_name(repo_id=f.repo_id, repo_type="model"), "blobs", sha256)
    if not os.path.isfile(blob):
        return None
    if not _already_verified(blob, sha256):
        if sha256_of(blob) != sha256:
            return None  # not the file: the normal error follows
        _mark_verified(blob, sha256)
    logger.info("%s: not cached at revision %s; using the cached file with the pinned sha256 (%s)",
                f.uri, f.revision or "main", blob)
    return blob


def _slash_hint(f: HFFile) -> str:
    """For ``@feature/x/file``: the revision ends at the first '/', say how to write ``feature/x``."""
    if not f.revision or "/" not in f.filename or _SLASHED_REVISION.match(f.revision):
        return ""
    first, rest = f.filename.split("/", 1)
    fixed = HFFile(f.repo_id, rest, f"{f.revision}/{first}").uri
    return (f" (the revision ends at the first '/': if you meant the branch or tag "
            f"'{f.revision}/{first}', write {fixed})")


def _verify_hf(path: str, f: HFFile, sha256: str | None, settings: dict) -> None:
    blob = os.path.realpath(path)
    lfs_oid = os.path.basename(blob)
    if sha256:
        expected, what = sha256, "the sha256 pinned for it"
    elif _SHA256.match(lfs_oid):
        expected, what = lfs_oid, "the sha256 the Hub states for it (its LFS object id)"
    elif _snapshot_repo_dir(path, f) is not None:
        # a snapshot file that is a plain file, not a link into blobs/ (a cache copied with
        # links followed, or written where links cannot be made): its LFS object id is not
        # in its name, so find it another way
        _verify_plain_snapshot(path, f, settings)
        return
    else:
        logger.info("%s: no published sha256 to check it against", f.uri)
        return
    if _already_verified(blob, expected):
        return
    actual = sha256_of(blob)
    if actual != expected:
        _forget(path, blob)
        raise ChecksumMismatchError(
            f"{f.uri}: the file's sha256 is {actual}, but {what} is {expected}. The file was removed "
            f"from the cache. If the publisher changed the file on purpose and you trust it, download "
            f"it yourself and pass its local path as weights= (that skips this check)")
    _mark_verified(blob, expected)


def _verify_plain_snapshot(path: str, f: HFFile, settings: dict) -> None:
    """Check a snapshot file that is not a link into ``blobs/`` against the Hub's sha256 for it:
    the one the Hub reports (online), or, offline, the LFS object ids of the repository's
    cached blobs (``cp -rL`` keeps them beside the copies); refused when neither is there."""
    record = _recorded_digest(path)
    if record is not None and _already_verified(path, record):
        return
    actual = sha256_of(path)
    blobs = os.path.join(_snapshot_repo_dir(path, f), "blobs")
    if os.path.isfile(os.path.join(blobs, actual)):
        _mark_verified(path, actual)
        return
    hub_oid = None if settings["offline"] else _hub_lfs_oid(f, settings)
    if hub_oid is not None:
        if actual != hub_oid:
            _forget(path, path)
            raise ChecksumMismatchError(
                f"{f.uri}: the cached file {path} (a plain copy, not a link into blobs/) has sha256 {actual}, "
                f"but the sha256 the Hub states for it (its LFS object id) is {hub_oid}. The file was removed "
                f"from the cache; run again to download it")
        _mark_verified(path, actual)
        return
    where = ("HF_HUB_OFFLINE is set" if settings["offline"] else
             "the Hub states no LFS sha256 for it")
    raise ChecksumMismatchError(
        f"{f.uri}: the cached file {path} is a plain copy, not a link into the cache's blobs/ (whose names "
        f"are the sha256 the Hub states), no blob of its content is cached ({blobs}), and {where}, so it "
        f"cannot be checked. Run once with the Hub reachable (the file is then checked against the Hub's "
        f"sha256, and the check is remembered), copy the cache with its links (cp -a, not cp -L), or, if "
        f"you trust the file, pass its local path as weights= (that skips this check)")


def _snapshot_repo_dir(path: str, f: HFFile) -> str | None:
    """``<cache>/models--org--repo`` when ``path`` is ``.../snapshots/<commit>/<file in repo>``."""
    snapshot = os.path.abspath(path)
    for _ in f.filename.split("/"):
        snapshot = os.path.dirname(snapshot)
    snapshots = os.path.dirname(snapshot)
    return os.path.dirname(snapshots) if os.path.basename(snapshots) == "snapshots" else None


def _hub_lfs_oid(f: HFFile, settings: dict) -> str | None:
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    url = hf_hub_url(f.repo_id, f.filename, revision=f.revision, endpoint=settings["endpoint"])
    try:
        with _quiet_retries():
            etag = get_hf_file_metadata(url, endpoint=settings["endpoint"], library_name="d2geo").etag
    except Exception as e:  # unreachable since hf_hub_download: treat as offline
        logger.info("%s: could not ask the Hub for the file's sha256 (%s)", f.uri, e)
        return None
    return etag if etag and _SHA256.match(etag) else None


def _forget(path: str, blob: str) -> None:
    for p in {path, blob}:
        try:
            os.remove(p)
        except FileNotFoundError:
            pass
