"""``https://`` weights: fetched into torch.hub's checkpoint folder, keyed by the whole URL,
verified and cached (see :mod:`d2geo.encoders.hub` for the rules shared with ``hf://``)."""
from __future__ import annotations

import hashlib
import logging
import os
from urllib.parse import urlparse

from .hub_common import (
    _TRUE,
    ChecksumMismatchError,
    WeightsDownloadError,
    _already_verified,
    _mark_verified,
    _progress_bars,
    _quiet_retries,
    sha256_of,
    torch_hub_checkpoint_dir,
)

logger = logging.getLogger(__name__)

__all__ = ["url_cache_path", "resolve_url"]


def url_cache_path(url: str) -> str:
    """Where the file of ``url`` is cached: ``$TORCH_HOME/hub/checkpoints/by-url/<key>/<name>``,
    ``<key>`` the first 16 hex digits of the sha256 of the whole URL, so two URLs whose files
    have the same name never share a cached file."""
    name = os.path.basename(urlparse(url).path)
    if not name:
        raise ValueError(f"{url!r} names no file")
    key = hashlib.sha256(url.encode("utf-8")).hexdigest()[:16]
    return os.path.join(torch_hub_checkpoint_dir(), "by-url", key, name)


def _legacy_url_cache(url: str, sha256: str | None, offline: bool) -> str | None:
    """A file of the URL's name directly in torch.hub's cache (where torch.hub and earlier d2geo
    kept URL downloads, keyed by name only): used only when it matches the pinned sha256."""
    legacy = os.path.join(torch_hub_checkpoint_dir(), os.path.basename(urlparse(url).path))
    if not os.path.isfile(legacy):
        return None
    if sha256 is not None:
        if _already_verified(legacy, sha256) or sha256_of(legacy) == sha256:
            _mark_verified(legacy, sha256)
            return legacy
        logger.info("%s: %s has the same name but not the pinned sha256 (it is another file); not used",
                    url, legacy)
        return None
    if offline:
        raise WeightsDownloadError(
            f"{url}: offline and not in d2geo's URL cache ({url_cache_path(url)}). torch.hub's cache has "
            f"{legacy}, a file of the same name, but nothing records which URL it came from (two URLs "
            f"with the same file name share it) and no sha256 is pinned to check it. If it is this URL's "
            f"file, pass its path as weights= or move it to {url_cache_path(url)}; or go online")
    logger.info("%s: %s has the same name but may come from another URL (no sha256 pinned to tell); "
                "downloading this URL's file", url, legacy)
    return None


def resolve_url(url: str, sha256: str | None, progress: bool = True) -> str:
    final = url_cache_path(url)
    name = os.path.basename(final)
    if os.path.isfile(final):
        _verify_url(final, url, sha256, cached=True)
        return final
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in _TRUE
    legacy = _legacy_url_cache(url, sha256, offline)
    if legacy is not None:
        return legacy
    if offline:
        raise WeightsDownloadError(
            f"{url}: offline and not in the cache (looked for {final}). To place it by hand: "
            f"download {url} on a connected machine and copy it to {final}, or pass its local path as weights=")
    cache = os.path.dirname(final)
    os.makedirs(cache, exist_ok=True)
    logger.info("downloading %s to %s", url, final)
    # The transfer is huggingface_hub's http_get (progress bar, retries that resume, and a
    # check of the received size against Content-Length): torch.hub.download_url_to_file
    # keeps a body cut short by a closed connection as if it were the whole file.
    from huggingface_hub.file_download import http_get

    tmp = _new_partial(cache, name)
    try:
        with open(tmp, "wb") as f:
            try:
                with _progress_bars(progress), _quiet_retries():
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


def _new_partial(directory: str, name: str) -> str:
    """An empty ``.<name>.<random>.partial`` created as a plain ``open()`` would create it (mode
    0666 less the umask: others can read the shared cache), not 0600 as ``mkstemp`` makes it."""
    while True:
        tmp = os.path.join(directory, f".{name}.{os.urandom(4).hex()}.partial")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:
            continue


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
