"""Weights by name: hf:// and https:// paths, pretrained=True, sha256 pins, the cache, offline use.

Every download goes to a Hub stand-in on 127.0.0.1 (tests/http_stub.py) that answers the
requests huggingface_hub's ``hf_hub_download`` makes; ``HF_ENDPOINT`` points at it.
"""
from __future__ import annotations

import hashlib
import io
import os
import re

import pytest
import torch

from http_stub import HubStandIn, commit_of, serve

from d2geo.encoders import (
    CheckpointError,
    ChecksumMismatchError,
    PretrainedCfg,
    WeightsDownloadError,
    build_encoder,
    get_pretrained_cfg,
    list_encoders,
    list_pretrained,
)
from d2geo.encoders import registry
from d2geo.encoders.hub import parse_hf_uri, resolve_weights

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURE = os.path.join(ROOT, "tests", "fixtures", "dinov2_official_tiny.pt")
TINY = dict(embed_dim=48, depth=3, num_heads=3, img_size=98)


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """The Hub stand-in, with huggingface_hub's and torch.hub's caches in tmp_path."""
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


def official_dinov2_bytes() -> bytes:
    """The tiny DINOv2 checkpoint in the official hub format, as a file's bytes."""
    sd = torch.load(FIXTURE, weights_only=True)["plain"]["state_dict"]
    buf = io.BytesIO()
    torch.save(sd, buf)
    return buf.getvalue()


def features(enc) -> torch.Tensor:
    x = torch.rand(1, 3, 98, 98, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return enc.eval().forward_features(x, layers=[0, 2], norm=True)[-1]


def cached_files(cache) -> list[str]:
    """Files under the Hub cache that a later run could take for a download (no locks, no
    bookkeeping)."""
    out = []
    for dirpath, _, filenames in os.walk(cache):
        for f in filenames:
            p = os.path.join(dirpath, f)
            if not (f.endswith(".lock") or f == "CACHEDIR.TAG" or os.sep + "refs" + os.sep in p):
                out.append(p)
    return out


@pytest.fixture
def tiny_variant(monkeypatch):
    """A registered tiny DINOv2 variant whose pretrained table entry the test sets."""

    def register(source, sha256=None, notes=""):
        cfg = PretrainedCfg(source=source, sha256=sha256, license="Apache-2.0", notes=notes)
        entry = registry._Entry(registry._REGISTRY["dinov2_vits14"].builder, dict(TINY, depth=3), cfg)
        monkeypatch.setitem(registry._REGISTRY, "test_tiny_dinov2", entry)
        return "test_tiny_dinov2"

    return register


# -- hf:// paths -------------------------------------------------------------------------------
def test_hf_path_loads_the_same_features_as_the_local_file(hub, tmp_path):
    data = official_dinov2_bytes()
    uri = hub.publish("acme/dinov2-tiny", "weights/dinov2_tiny.pth", data)
    local = tmp_path / "dinov2_tiny.pth"
    local.write_bytes(data)

    from_hub = build_encoder("dinov2_vits14", weights=uri, **TINY)
    from_file = build_encoder("dinov2_vits14", weights=str(local), **TINY)
    assert torch.equal(features(from_hub), features(from_file))
    assert hub.file_requests() == [("HEAD", "/acme/dinov2-tiny/resolve/main/weights/dinov2_tiny.pth"),
                                   ("GET", "/acme/dinov2-tiny/resolve/main/weights/dinov2_tiny.pth")]
    # stored the huggingface_hub way: a snapshot entry pointing at the blob named by its sha256
    path = resolve_weights(uri)
    assert os.path.realpath(path).endswith(os.path.join("blobs", hashlib.sha256(data).hexdigest()))
    assert path.startswith(str(hub.cache))


def test_second_load_offline_comes_from_the_cache_without_a_request(hub, monkeypatch):
    data = official_dinov2_bytes()
    uri = hub.publish("acme/dinov2-tiny", "dinov2_tiny.pth", data)
    first = features(build_encoder("dinov2_vits14", weights=uri, **TINY))
    before = list(hub.requests)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    second = features(build_encoder("dinov2_vits14", weights=uri, **TINY))
    assert hub.requests == before  # not one request, file or otherwise
    assert torch.equal(first, second)
    # a pinned revision (the commit hash) is read from the cache offline too
    pinned = f"hf://acme/dinov2-tiny@{commit_of('acme/dinov2-tiny')}/dinov2_tiny.pth"
    assert open(resolve_weights(pinned), "rb").read() == data
    assert hub.requests == before


def test_offline_and_not_cached_is_a_clear_error(hub, monkeypatch):
    hub.publish("acme/dinov2-tiny", "dinov2_tiny.pth", b"x" * 100)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsDownloadError) as e:
        resolve_weights("hf://acme/dinov2-tiny/dinov2_tiny.pth")
    msg = str(e.value)
    assert "HF_HUB_OFFLINE is set and it is not in the cache" in msg
    assert "acme/dinov2-tiny / dinov2_tiny.pth" in msg and str(hub.cache) in msg
    assert "hf download acme/dinov2-tiny dinov2_tiny.pth" in msg and "weights=" in msg
    assert hub.file_requests() == []


def test_unreachable_hub_is_a_clear_error(tmp_path, monkeypatch):
    with serve(HubStandIn().handler()) as url:
        pass  # the server is gone: nothing listens on that port any more
    monkeypatch.setenv("HF_ENDPOINT", url)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    import time

    monkeypatch.setattr(time, "sleep", lambda s: None)  # huggingface_hub's 23 s of retry back-off
    with pytest.raises(WeightsDownloadError, match=r"could not be reached and it is not in the cache.*"
                                                   r"To place it by hand"):
        resolve_weights("hf://acme/gone/w.pth")


def test_missing_file_and_revision_are_named(hub):
    hub.publish("acme/dinov2-tiny", "dinov2_tiny.pth", b"x" * 100)
    with pytest.raises(WeightsDownloadError, match="acme/dinov2-tiny has no file 'other.pth'"):
        resolve_weights("hf://acme/dinov2-tiny/other.pth")
    with pytest.raises(WeightsDownloadError, match="has no revision 'v9'"):
        resolve_weights("hf://acme/dinov2-tiny@v9/dinov2_tiny.pth")


@pytest.mark.parametrize("bad", ["hf://", "hf://acme/repo", "hf://acme/repo/", "hf://acme/repo@/w.pth",
                                 "hf://acme/../w.pth", "hf://acme/repo/a//b.pth", "hf://acme/repo/w.pth?x=1"])
def test_invalid_hf_paths(bad):
    with pytest.raises(ValueError, match=r"not a valid hf:// path: write hf://<org>/<repo>\[@<revision>\]"):
        resolve_weights(bad)


def test_hf_path_grammar():
    f = parse_hf_uri("hf://ibm-nasa-geospatial/Prithvi-EO-2.0-300M@0a1b2c/sub/dir/w.pt")
    assert (f.repo_id, f.revision, f.filename) == ("ibm-nasa-geospatial/Prithvi-EO-2.0-300M", "0a1b2c", "sub/dir/w.pt")
    assert f.uri == "hf://ibm-nasa-geospatial/Prithvi-EO-2.0-300M@0a1b2c/sub/dir/w.pt"


# -- verification ---------------------------------------------------------------------------------
def test_file_that_differs_from_the_hubs_sha256_is_refused_and_removed(hub):
    good = os.urandom(3000)
    uri = hub.publish("acme/w", "w.pth", good)
    hub.files[("acme/w", "w.pth")] = (good[:-1] + b"!", hub.files[("acme/w", "w.pth")][1])  # content != oid
    with pytest.raises(ChecksumMismatchError) as e:
        resolve_weights(uri)
    assert hashlib.sha256(good).hexdigest() in str(e.value) and "LFS object id" in str(e.value)
    assert cached_files(hub.cache) == []
    hub.publish("acme/w", "w.pth", good)
    assert open(resolve_weights(uri), "rb").read() == good


def test_cached_file_corrupted_later_is_refused_then_fetched_again(hub):
    data = os.urandom(4000)
    uri = hub.publish("acme/w", "w.pth", data)
    blob = os.path.realpath(resolve_weights(uri))
    os.chmod(blob, 0o644)
    with open(blob, "r+b") as f:  # e.g. a disk error, or an edit by hand
        f.seek(10)
        f.write(b"\0\0\0")
    with pytest.raises(ChecksumMismatchError, match="was removed from the cache"):
        resolve_weights(uri)
    assert open(resolve_weights(uri), "rb").read() == data  # downloaded again


def test_verification_is_remembered_until_the_file_changes(hub, monkeypatch):
    """A verified file is not hashed again by a later process (a 5 GB checkpoint takes half a
    minute to hash), unless its size, mtime or inode changed."""
    from d2geo.encoders import hub as hub_module, hub_common

    data = os.urandom(5000)
    uri = hub.publish("acme/w", "w.pth", data)
    blob = os.path.realpath(resolve_weights(uri))
    monkeypatch.setattr(hub_common, "_VERIFIED", {})  # as in a new process

    def no_hashing(path, chunk=0):
        raise AssertionError("hashed again")

    with monkeypatch.context() as m:
        m.setattr(hub_module, "sha256_of", no_hashing)
        assert os.path.realpath(resolve_weights(uri)) == blob
    os.utime(blob, ns=(1, 1))  # touched: hashed again (and still fine)
    monkeypatch.setattr(hub_common, "_VERIFIED", {})
    calls = []
    real = hub_module.sha256_of
    monkeypatch.setattr(hub_module, "sha256_of", lambda p, chunk=1 << 20: calls.append(p) or real(p))
    assert os.path.realpath(resolve_weights(uri)) == blob and calls == [blob]


def test_interrupted_download_leaves_nothing_a_later_run_trusts(hub):
    data = os.urandom(200_000)
    uri = hub.publish("acme/w", "big.pth", data)
    hub.truncate.add("big.pth")  # every response stops after half the body
    with pytest.raises(WeightsDownloadError, match="the download failed .*nothing was kept"):
        resolve_weights(uri)
    assert cached_files(hub.cache) == []
    before = len(hub.file_requests())
    hub.truncate.clear()
    path = resolve_weights(uri)
    assert open(path, "rb").read() == data
    assert len(hub.file_requests()) > before  # fetched again, not taken from a partial file


# -- pretrained=True ---------------------------------------------------------------------------
def test_pretrained_requests_the_published_file_and_refuses_a_sha256_mismatch(hub):
    """prithvi_eo_v1_100's file has a published sha256; a different file at that place is
    refused before the model is built, with both hashes and the way around it."""
    cfg = get_pretrained_cfg("prithvi_eo_v1_100")
    repo, filename, rev = ("ibm-nasa-geospatial/Prithvi-EO-1.0-100M", "Prithvi_EO_V1_100M.pt",
                           "f3a9ea7a1723621b0aeceb4de993093704d712c5")
    assert cfg.source == f"hf://{repo}@{rev}/{filename}" and cfg.sha256 == (
        "7fac0c8a8693198e32a055e0c5a967f8b005f382182b63df1b29fdcd5c880731")
    impostor = b"not the published weights" * 100
    hub.publish(repo, filename, impostor)
    hub.revisions.add((repo, rev))
    with pytest.raises(ChecksumMismatchError) as e:
        build_encoder("prithvi_eo_v1_100", pretrained=True)
    msg = str(e.value)
    assert cfg.sha256 in msg and hashlib.sha256(impostor).hexdigest() in msg
    assert "pinned" in msg and "weights=" in msg
    assert hub.file_requests() == [("HEAD", f"/{repo}/resolve/{rev}/{filename}"),
                                   ("GET", f"/{repo}/resolve/{rev}/{filename}")]
    assert cached_files(hub.cache) == []
    # the same file given as an hf:// path is checked against the same pin
    with pytest.raises(ChecksumMismatchError):
        resolve_weights(cfg.source, sha256=registry.pretrained_sha256(cfg.source))


def test_pretrained_loads_the_pinned_file(hub, tiny_variant, tmp_path):
    pytest.importorskip("detectron2", reason="GeoBackbone is d2geo's detectron2 side")
    from d2geo.modeling import GeoBackbone

    data = official_dinov2_bytes()
    uri = hub.publish("acme/tiny", "tiny.pth", data)
    name = tiny_variant(uri, sha256=hashlib.sha256(data).hexdigest())
    local = tmp_path / "tiny.pth"
    local.write_bytes(data)
    ref = features(build_encoder("dinov2_vits14", weights=str(local), **TINY))
    assert torch.equal(features(build_encoder(name, pretrained=True)), ref)
    backbone = GeoBackbone(name, pretrained=True)
    assert torch.equal(features(backbone.encoder), ref)
    # weights= replaces the published source (the override the mismatch error names)
    other = build_encoder("dinov2_vits14", **TINY).vit.state_dict()
    enc = build_encoder(name, pretrained=True, weights={f"{k}": v for k, v in other.items()})
    assert torch.equal(enc.vit.pos_embed, other["pos_embed"])


def test_pretrained_without_a_public_source_says_so(tiny_variant):
    name = tiny_variant(None, notes="the authors have not released these weights")
    with pytest.raises(CheckpointError, match=re.escape(
            f"pretrained=True: {name} has no published weights (the authors have not released these "
            f"weights). Pass weights=")):
        build_encoder(name, pretrained=True)


def test_pretrained_table_covers_every_variant():
    for name in list_encoders():
        cfg = get_pretrained_cfg(name)
        assert cfg.source and cfg.license, name
        assert cfg.source.startswith(("hf://", "https://")), name
        if cfg.source.startswith("hf://"):
            parse_hf_uri(cfg.source)
        assert len(cfg.bands) == len(cfg.mean) == len(cfg.std) > 0, name
        assert cfg.patch_size and cfg.input_size, name
    assert set(list_pretrained()) == set(list_encoders())
    # no signed (expiring) links
    assert not [n for n in list_encoders() if "?" in get_pretrained_cfg(n).source]
    # the statistics that d2geo.data.stats lists come from the tables
    pytest.importorskip("detectron2")
    from d2geo.data.stats import SENSOR_STATS

    assert SENSOR_STATS["prithvi_eo_v2"].mean == get_pretrained_cfg("prithvi_eo_v2_300_tl").mean
    assert SENSOR_STATS["clay_naip"].std == get_pretrained_cfg("clay_v1_5_large").stats_for("naip").std


# -- https:// ------------------------------------------------------------------------------------
def test_https_style_url_goes_through_torch_hubs_cache(hub, tmp_path):
    data = official_dinov2_bytes()
    hub.publish("files/x", "dinov2/dinov2_tiny_pretrain.pth", data)
    url = f"{hub.url}/files/x/resolve/main/dinov2/dinov2_tiny_pretrain.pth"
    path = resolve_weights(url)
    key = hashlib.sha256(url.encode()).hexdigest()[:16]  # the cache is keyed by the whole URL
    assert path == str(tmp_path / "torch" / "hub" / "checkpoints" / "by-url" / key / "dinov2_tiny_pretrain.pth")
    n = len(hub.file_requests())
    assert resolve_weights(url) == path and len(hub.file_requests()) == n  # cached
    with pytest.raises(ChecksumMismatchError, match="pinned for it is 0{64}"):
        resolve_weights(url, sha256="0" * 64)
    assert not os.path.exists(path)


def test_interrupted_url_download_leaves_nothing(hub, tmp_path):
    hub.publish("files/x", "big.pth", os.urandom(100_000))
    hub.truncate.add("big.pth")
    with pytest.raises(WeightsDownloadError, match="nothing was kept"):
        resolve_weights(f"{hub.url}/files/x/resolve/main/big.pth")
    folder = tmp_path / "torch" / "hub" / "checkpoints"
    assert [f for _, _, files in os.walk(folder) for f in files] == []


def test_readme_rows_state_each_variants_source_revision_sha256_and_license():
    """The rows of variants in docs/weights.md (the complete reference is
    ``d2geo.encoders.describe`` / ``--list-encoders``) must agree with the tables."""
    readme = open(os.path.join(ROOT, "docs", "weights.md"), encoding="utf-8").read()
    rows = {m.group(1): m.group(0) for m in re.finditer(r"^\| `([a-z0-9_]+)` \| `(?:hf|https)://.*$", readme, re.M)}
    wrong = []
    for name, row in rows.items():
        cfg = get_pretrained_cfg(name)
        cells = [c.strip() for c in row.strip("|").split("|")]
        expected = [f"`{cfg.source}`", cfg.revision or ("main" if cfg.source.startswith("hf://") else "-")]
        if cells[1:3] != expected or cells[4] != cfg.license or (
                (cells[3] != f"`{cfg.sha256}`") if cfg.sha256 else not cells[3].startswith("not published")):
            wrong.append(f"{name}: source {cfg.source}, revision {expected[1]}, sha256 {cfg.sha256}, {cfg.license}")
        if "first 8 hex digits end the file name" in row:  # a claim about the file name: true?
            suffix = re.search(r"-([0-9a-f]{8})\.[a-z]+$", cfg.source)
            if suffix is None or (cfg.sha256 and not cfg.sha256.startswith(suffix.group(1))):
                wrong.append(f"{name}: the file name does not end in the first 8 hex digits of its sha256")
    assert not wrong, "README rows that disagree with the pretrained tables:\n" + "\n".join(wrong)


def test_dinov3_pretrained_fetches_timms_hub_copy_and_loads_its_layout(hub, tmp_path):
    """dinov3_* point at timm's ``_qkvb`` copies (no signed links); a file in that layout (here
    a tiny one, at the published repo and file name) loads with its q/v biases."""
    import timm
    from safetensors.torch import save_file

    tiny = dict(embed_dim=64, depth=2, num_heads=2)
    torch.manual_seed(0)
    ref = timm.create_model("vit_small_patch16_dinov3_qkvb", pretrained=False, num_classes=0, **tiny)
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(tmp_path / "model.safetensors"))
    repo = "timm/vit_small_patch16_dinov3_qkvb.lvd1689m"
    assert get_pretrained_cfg("dinov3_vits16").source == f"hf://{repo}/model.safetensors"
    hub.publish(repo, "model.safetensors", (tmp_path / "model.safetensors").read_bytes())

    enc = build_encoder("dinov3_vits16", pretrained=True, img_size=64, **tiny).eval()
    assert hub.file_requests() == [("HEAD", f"/{repo}/resolve/main/model.safetensors"),
                                   ("GET", f"/{repo}/resolve/main/model.safetensors")]
    ours = dict(enc.vit.named_parameters())
    for key in ("blocks.1.attn.q_bias", "blocks.1.attn.v_bias", "blocks.0.attn.qkv.weight"):
        assert torch.equal(ours[key], ref.state_dict()[key]), key
