"""Weights by name, round 3: the URL cache keyed by the whole URL, the Hub's revision forms,
plain-copy snapshots checked, one clear line for an unreachable server, and the file mode of
atomic writes. Downloads go to the Hub stand-in on 127.0.0.1 (tests/http_stub.py)."""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
import time

import pytest

from http_stub import HubStandIn, serve

from d2geo.encoders import ChecksumMismatchError, WeightsDownloadError
from d2geo.encoders.hub import parse_hf_uri, resolve_weights, url_cache_path


@pytest.fixture
def hub(tmp_path, monkeypatch):
    stand_in = HubStandIn()
    with serve(stand_in.handler()) as url:
        stand_in.url = url
        monkeypatch.setenv("HF_ENDPOINT", url)
        monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
        monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
        monkeypatch.setenv("D2GEO_CACHE", str(tmp_path / "d2geo"))
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
        stand_in.cache = tmp_path / "hf"
        yield stand_in


def read(path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


# -- https:// cache keyed by the whole URL ----------------------------------------------------
def test_two_urls_with_the_same_file_name_are_two_cached_files(hub, monkeypatch):
    a, b = os.urandom(1000), os.urandom(1000)
    hub.publish("org/a", "weights.pth", a)
    hub.publish("org/b", "weights.pth", b)
    url_a = f"{hub.url}/org/a/resolve/main/weights.pth"
    url_b = f"{hub.url}/org/b/resolve/main/weights.pth"
    assert read(resolve_weights(url_a)) == a
    assert read(resolve_weights(url_b)) == b  # not the first URL's cached file
    assert resolve_weights(url_a) != resolve_weights(url_b)
    n = len(hub.file_requests())
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # both are cached, each under its own URL
    assert read(resolve_weights(url_a)) == a and read(resolve_weights(url_b)) == b
    assert len(hub.file_requests()) == n


def test_a_file_of_the_same_name_in_torch_hubs_cache_is_used_only_when_it_matches_the_pin(hub, tmp_path,
                                                                                             monkeypatch):
    """torch.hub (and earlier d2geo) kept URL downloads by file name only: such a file is reused
    when the pinned sha256 says it is the URL's file, and never taken on trust without one."""
    data, other = os.urandom(800), os.urandom(800)
    hub.publish("org/a", "w.pth", data)
    url = f"{hub.url}/org/a/resolve/main/w.pth"
    legacy = tmp_path / "torch" / "hub" / "checkpoints" / "w.pth"
    legacy.parent.mkdir(parents=True)
    legacy.write_bytes(data)
    assert resolve_weights(url, sha256=hashlib.sha256(data).hexdigest()) == str(legacy)
    assert hub.file_requests() == []  # re-verified, not downloaded again

    legacy.write_bytes(other)  # another URL's file of the same name
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsDownloadError, match="nothing records which URL it came from"):
        resolve_weights(url)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    path = resolve_weights(url)
    assert path == url_cache_path(url) and read(path) == data
    assert read(legacy) == other  # left alone


def test_url_cache_files_are_readable_by_others_under_umask_022(hub):
    hub.publish("org/a", "w.pth", b"w" * 100)
    old = os.umask(0o022)
    try:
        path = resolve_weights(f"{hub.url}/org/a/resolve/main/w.pth")
    finally:
        os.umask(old)
    assert os.stat(path).st_mode & 0o777 == 0o644


# -- the Hub's revision forms -----------------------------------------------------------------
@pytest.mark.parametrize("uri, repo, revision, filename", [
    ("hf://org/repo@refs/pr/3/file.pt", "org/repo", "refs/pr/3", "file.pt"),
    ("hf://org/repo@refs/pr/12/sub/file.pt", "org/repo", "refs/pr/12", "sub/file.pt"),
    ("hf://org/repo@refs/convert/parquet/d/f.parquet", "org/repo", "refs/convert/parquet", "d/f.parquet"),
    ("hf://org/repo@feature%2Fx/file.pt", "org/repo", "feature/x", "file.pt"),
    ("hf://org/repo@" + "0123456789abcdef" * 2 + "01234567/a/b.pt", "org/repo", "0123456789abcdef" * 2 + "01234567",
     "a/b.pt"),
    ("hf://org/repo@v1.0/file.pt", "org/repo", "v1.0", "file.pt"),
])
def test_hub_revision_forms(uri, repo, revision, filename):
    f = parse_hf_uri(uri)
    assert (f.repo_id, f.revision, f.filename) == (repo, revision, filename)
    assert f.uri == uri and parse_hf_uri(f.uri) == f


@pytest.mark.parametrize("bad, why", [
    ("hf://org/repo@refs/heads/x/file.pt", "none of the Hub's refs/pr/<N> or refs/convert/<name>"),
    ("hf://org/repo@refs/pr/x/file.pt", "none of the Hub's refs/pr/<N>"),
    ("hf://org/repo@refs/pr/3", "no file is named after the revision @refs/pr/3"),
])
def test_revision_forms_the_hub_does_not_have_are_refused(bad, why):
    with pytest.raises(ValueError, match="is not a valid hf:// path") as e:
        parse_hf_uri(bad)
    assert why in str(e.value) and "%2F" in str(e.value)


def test_pull_request_and_slashed_branch_revisions_download_from_that_revision(hub):
    data = os.urandom(500)
    hub.publish("acme/w", "w.pth", data)
    hub.revisions.update({("acme/w", "refs/pr/3"), ("acme/w", "feature/x")})
    assert read(resolve_weights("hf://acme/w@refs/pr/3/w.pth")) == data
    assert read(resolve_weights("hf://acme/w@feature%2Fx/w.pth")) == data
    asked = {p.split("/resolve/")[1] for _, p in hub.file_requests()}
    assert asked == {"refs%2Fpr%2F3/w.pth", "feature%2Fx/w.pth"}
    # a branch with '/' written without %2F: the revision 'feature' is not found, and the
    # error says how to write the one that was meant
    with pytest.raises(WeightsDownloadError, match="has no revision 'feature'.*write "
                                                    "hf://acme/w@feature%2Fx/w.pth"):
        resolve_weights("hf://acme/w@feature/x/w.pth")


def test_offline_pinned_file_cached_from_another_revision_is_found_by_its_sha256(hub, monkeypatch):
    """A file downloaded at main before its entry pinned a commit: offline, the pinned entry
    finds it by the pinned sha256 (the blob's name, checked by hashing) instead of failing."""
    from http_stub import commit_of

    data = os.urandom(2000)
    hub.publish("acme/w", "w.pth", data)
    resolve_weights("hf://acme/w/w.pth")  # cached at main
    pinned = f"hf://acme/w@{'c' * 40}/w.pth"  # a commit it was never downloaded at
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    sha = hashlib.sha256(data).hexdigest()
    assert read(resolve_weights(pinned, sha256=sha)) == data
    with pytest.raises(WeightsDownloadError, match="not in the cache"):
        resolve_weights(pinned)  # without the pin nothing says which file it is
    with pytest.raises(WeightsDownloadError, match="not in the cache"):
        resolve_weights(pinned, sha256="0" * 64)
    assert commit_of("acme/w") != "c" * 40


# -- snapshot files that are plain copies -----------------------------------------------------
def plain_copy(path: str) -> str:
    """Replace the snapshot link by a copy of its blob (as ``cp -rL`` of a cache leaves it)."""
    blob = os.path.realpath(path)
    os.remove(path)
    shutil.copyfile(blob, path)
    return blob


def corrupt(path: str) -> None:
    with open(path, "r+b") as f:
        f.seek(5)
        f.write(b"\0\0\0\0")


@pytest.mark.parametrize("filename", ["w.pth", "v1.5/sub/w.pth"])
def test_offline_plain_copy_snapshot_is_checked_against_the_cached_blobs(hub, monkeypatch, filename):
    data = os.urandom(3000)
    uri = hub.publish("acme/w", filename, data)
    path = resolve_weights(uri)
    plain_copy(path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert read(resolve_weights(uri)) == data  # its sha256 names a cached blob: the Hub's file
    corrupt(path)
    with pytest.raises(ChecksumMismatchError, match="plain copy, not a link into the cache's blobs/"):
        resolve_weights(uri)


def test_plain_copy_without_blobs_is_refused_offline_and_checked_against_the_hub_online(hub, monkeypatch):
    data = os.urandom(3000)
    uri = hub.publish("acme/w", "w.pth", data)
    path = resolve_weights(uri)
    os.remove(plain_copy(path))  # as where links cannot be made: the blob was moved to the snapshot
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ChecksumMismatchError, match="HF_HUB_OFFLINE is set, so it cannot be checked"):
        resolve_weights(uri)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    assert read(resolve_weights(uri)) == data  # online: matches the Hub's LFS sha256
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert read(resolve_weights(uri)) == data  # and that check is remembered
    monkeypatch.delenv("HF_HUB_OFFLINE")
    corrupt(path)
    with pytest.raises(ChecksumMismatchError, match="the sha256 the Hub states for it"):
        resolve_weights(uri)
    assert not os.path.exists(path)


# -- an unreachable server: one clear message --------------------------------------------------
def test_unreachable_hub_says_one_thing(tmp_path, monkeypatch, capfd, caplog):
    """huggingface_hub logs each of its six tries twice (its own handler and the root logger's):
    those lines are replaced by one, and the error says the rest."""
    with serve(HubStandIn().handler()) as url:
        pass
    monkeypatch.setenv("HF_ENDPOINT", url)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    monkeypatch.setattr(time, "sleep", lambda s: None)
    caplog.set_level(logging.INFO)
    with pytest.raises(WeightsDownloadError, match="could not be reached"):
        resolve_weights("hf://acme/gone/w.pth")
    err = capfd.readouterr().err
    assert "Retry" not in err and "thrown while requesting" not in err
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert not [m for m in lines if "Retry" in m or "thrown while requesting" in m], lines
    assert len([m for m in lines if "does not answer" in m]) == 1, lines


# -- the mode of atomically written files ------------------------------------------------------
@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_atomic_writes_have_the_mode_a_plain_write_has(tmp_path, umask, mode):
    from d2geo.data.files import atomic_path, atomic_write_text

    old = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "a.json", "{}")
        with atomic_path(tmp_path / "b.tif") as tmp:
            open(tmp, "w").write("x")
        with open(tmp_path / "plain", "w") as f:
            f.write("x")
    finally:
        os.umask(old)
    assert os.stat(tmp_path / "plain").st_mode & 0o777 == mode
    assert os.stat(tmp_path / "a.json").st_mode & 0o777 == mode
    assert os.stat(tmp_path / "b.tif").st_mode & 0o777 == mode


def test_atomic_rewrite_keeps_the_existing_files_mode(tmp_path):
    from d2geo.data.files import atomic_write_text

    target = tmp_path / "shared.json"
    target.write_text("old")
    os.chmod(target, 0o640)
    atomic_write_text(target, "new")
    assert target.read_text() == "new" and os.stat(target).st_mode & 0o777 == 0o640
