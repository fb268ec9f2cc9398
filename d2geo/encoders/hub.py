"""Weights by name: ``hf://`` and ``https://`` sources, downloaded, verified and cached.

Accepted wherever d2geo takes weights (``build_encoder(weights=...)``, ``GeoBackbone``,
``tools/convert_checkpoint.py``, ``train.init_checkpoint`` through detectron2's
``PathManager``):

* ``hf://<org>/<repo>[@<revision>]/<path in repo>``: a file of a Hugging Face model
  repository, fetched with ``huggingface_hub.hf_hub_download``. Its usual settings apply:
  ``HF_ENDPOINT`` (a mirror), ``HF_HUB_CACHE`` / ``HF_HOME`` (the cache), ``HF_HUB_OFFLINE=1``
  (cache only), ``HF_TOKEN`` (gated or private repositories). They are read when a file is
  resolved, so setting them after ``import d2geo`` works too.
* ``https://...`` (or ``http://``): fetched into torch.hub's cache,
  ``$TORCH_HOME/hub/checkpoints`` (where ``torch.hub.load_state_dict_from_url`` keeps
  them, so files it downloaded before are reused). ``HF_HUB_OFFLINE=1`` means cache only
  here too.
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

import contextlib
import hashlib
import logging
import os
import re
import tempfile
from dataclasses import dataclass
from urllib.parse import urlparse

from .checkpoint import CheckpointError

logger = logging.getLogger(__name__)

__all__ = [
    "HF_PREFIX", "HFFile", "WeightsDownloadError", "ChecksumMismatchError", "ManualDownloadError",
    "parse_hf_uri", "is_remote", "needs_manual_download", "resolve_weights", "sha256_of",
    "torch_hub_checkpoint_dir",
]

HF_PREFIX = "hf://"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_REPO_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_TRUE = {"1", "on", "yes", "true"}


class WeightsDownloadError(CheckpointError, OSError):
    """Published weights that could not be fetched (offline, missing, refused)."""


class ChecksumMismatchError(WeightsDownloadError):
    """A downloaded file whose sha256 differs from the one it must have."""


class ManualDownloadError(WeightsDownloadError):
    """Weights shared where only a browser can fetch them: download by hand, pass the path."""


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
        rev = f"@{self.revision}" if self.revision else ""
        return f"{HF_PREFIX}{self.repo_id}{rev}/{self.filename}"


def parse_hf_uri(uri: str) -> HFFile:
    """Split ``hf://org/repo[@revision]/path/in/repo``."""
    if not uri.startswith(HF_PREFIX):
        raise ValueError(f"{uri!r} is not an hf:// path")
    rest = uri[len(HF_PREFIX):]
    parts = rest.split("/")
    bad = (len(parts) < 3 or any(p in ("", ".", "..") for p in parts) or "\\" in rest
           or "?" in rest or "#" in rest)
    if not bad:
        org, repo_rev, *path = parts
        repo, _, revision = repo_rev.partition("@")
        bad = not (_REPO_PART.match(org) and _REPO_PART.match(repo)) or (repo_rev.endswith("@"))
    if bad:
        raise ValueError(
            f"{uri!r} is not a valid hf:// path: write hf://<org>/<repo>[@<revision>]/<file in repo>, "
            f"e.g. hf://ibm-nasa-geospatial/Prithvi-EO-2.0-300M-TL/Prithvi_EO_V2_300M_TL.pt "
            f"(a revision is a branch, tag or commit hash without '/')"
        )
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
        return _resolve_url(source, sha256, progress)
    return os.path.expanduser(source)


# -- Hugging Face Hub ------------------------------------------------------------------------
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
        with _progress_bars(progress):
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
        raise WeightsDownloadError(f"{f.uri}: {f.repo_id} has no revision {f.revision!r}") from e
    except EntryNotFoundError as e:
        if isinstance(e, LocalEntryNotFoundError):
            why = ("HF_HUB_OFFLINE is set and it is not in the cache" if s["offline"] else
                   "the Hub could not be reached and it is not in the cache")
            raise WeightsDownloadError(
                f"{f.uri}: {why} ({s['cache_dir']}, looked for {f.repo_id} / {f.filename} at revision "
                f"{f.revision or 'main'}). To place it by hand: {_place_by_hand(f, s['cache_dir'])}"
            ) from e
        raise WeightsDownloadError(f"{f.uri}: {f.repo_id} has no file {f.filename!r}") from e
    except Exception as e:  # connection errors, interrupted downloads (httpx errors), size mismatches
        raise WeightsDownloadError(
            f"{f.uri}: the download failed ({type(e).__name__}: {e}); nothing was kept, try again. "
            f"To place it by hand: {_place_by_hand(f, s['cache_dir'])}") from e
    _verify_hf(path, f, sha256)
    return path


def _verify_hf(path: str, f: HFFile, sha256: str | None) -> None:
    blob = os.path.realpath(path)
    lfs_oid = os.path.basename(blob)
    expected, what = (sha256, "the sha256 pinned for it") if sha256 else (
        (lfs_oid, "the sha256 the Hub states for it (its LFS object id)") if _SHA256.match(lfs_oid) else (None, ""))
    if expected is None:
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


def _forget(path: str, blob: str) -> None:
    for p in {path, blob}:
        try:
            os.remove(p)
        except FileNotFoundError:
            pass


_VERIFIED: dict[str, tuple] = {}


def _stamp(path: str) -> tuple:
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns, st.st_ino


def _marker(path: str) -> str:
    """Where the verification of ``path`` is remembered across processes (hashing a 5 GB
    checkpoint takes half a minute): ``$D2GEO_CACHE/verified`` (default ``~/.cache/d2geo``)."""
    root = os.environ.get("D2GEO_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "d2geo")
    return os.path.join(root, "verified", hashlib.sha256(os.path.abspath(path).encode()).hexdigest())


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


# -- URLs ------------------------------------------------------------------------------------
def _resolve_url(url: str, sha256: str | None, progress: bool) -> str:
    name = os.path.basename(urlparse(url).path)
    if not name:
        raise ValueError(f"{url!r} names no file")
    cache = torch_hub_checkpoint_dir()
    final = os.path.join(cache, name)
    if os.path.isfile(final):
        _verify_url(final, url, sha256, cached=True)
        return final
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in _TRUE:
        raise WeightsDownloadError(
            f"{url}: offline and not in torch.hub's cache (looked for {final}). To place it by hand: "
            f"download {url} on a connected machine and copy it to {final}, or pass its local path as weights=")
    os.makedirs(cache, exist_ok=True)
    logger.info("downloading %s to %s", url, final)
    # The transfer is huggingface_hub's http_get (progress bar, retries that resume, and a
    # check of the received size against Content-Length): torch.hub.download_url_to_file
    # keeps a body cut short by a closed connection as if it were the whole file.
    from huggingface_hub.file_download import http_get

    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".partial", dir=cache)
    try:
        with os.fdopen(fd, "wb") as f:
            try:
                with _progress_bars(progress):
                    http_get(url, f, displayed_filename=name)
            except Exception as e:  # connection errors, short bodies, HTTP errors: nothing is kept
                raise WeightsDownloadError(
                    f"{url}: the download failed ({type(e).__name__}: {e}); nothing was kept. Check the "
                    f"connection and try again, or download it by hand to {final} (or pass its local "
                    f"path as weights=)") from e
        _verify_url(tmp, url, sha256, cached=False)
        os.replace(tmp, final)
        if sha256:
            _mark_verified(final, sha256)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return final


def _verify_url(path: str, url: str, sha256: str | None, *, cached: bool) -> None:
    if sha256 is None or _already_verified(path, sha256):
        return
    actual = sha256_of(path)
    if actual != sha256:
        os.remove(path)
        where = "the cached copy" if cached else "the downloaded file"
        raise ChecksumMismatchError(
            f"{url}: {where}'s sha256 is {actual}, but the sha256 pinned for it is {sha256}. It was "
            f"removed. If the publisher changed the file on purpose and you trust it, download it "
            f"yourself and pass its local path as weights= (that skips this check)")
    if not path.endswith(".partial"):
        _mark_verified(path, sha256)
