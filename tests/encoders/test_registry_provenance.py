"""Issue 23: pinned provenance of every pretrained entry (revision, sha256, where they come
from), the two TerraMind tiny files, and a pinned file that changed being a clear error."""
from __future__ import annotations

import hashlib
import os
import re

import pytest

from http_stub import HubStandIn, serve

from d2geo.encoders import ChecksumMismatchError, build_encoder, get_pretrained_cfg, is_test_variant, list_encoders
from d2geo.encoders.hub import parse_hf_uri

_COMMIT = re.compile(r"^[0-9a-f]{40}$")

#: the full sha256 values issue 23 lists as public (torchgeo's Hub files, the Hub's LFS ids)
ISSUE_23_SHA256 = {
    "dofa_vitb16": "a027595480a4b0641d0be330d876034439bcb6ead8b9ce10f4949227426856c6",
    "dofa_vitl16": "0ff904d35418b0ae26e15812f2669f906a047f94517823bfbc3824eac9328291",
    "ssl4eo_s12_vits16_dino": "36bcc1273227252faf98e1d9f32c35166d3612d30dc0c15812c29bed6da9a7d5",
    "ssl4eo_s12_vits16_moco": "67c9032df0449ae37f93c51696bcae0c6dc3485103deb44b4669e9897b90409c",
    "croma_base": "0238d814b53108f3574bf1ea240e38a0a6edd46173816d9a6962070561893b63",
    "croma_large": "921e69ad4069201298bb5c860dc332f31e0cb01df6864f294a79fa8f921915a7",
    "scale_mae_vitl16": "386989c9cf349a5045c2ac76f7d0225ae3a54b2a2c158fa87e5df5103e5d9ed9",
}


@pytest.mark.parametrize("name", list_encoders(tests=True))
def test_no_entry_moves_under_a_user_without_saying_why(name):
    cfg = get_pretrained_cfg(name)
    if cfg.source is None:  # only the tiny test variants have no weights: nothing to pin
        assert is_test_variant(name) and cfg.pinned and not (cfg.sha256 or cfg.unpinned_reason or cfg.pinned_by)
        return
    if cfg.source.startswith("hf://"):
        revision = parse_hf_uri(cfg.source).revision
        assert cfg.pinned == bool(revision and _COMMIT.match(revision)), name
    else:
        assert cfg.pinned == bool(cfg.sha256), name
    if cfg.pinned:
        assert not cfg.unpinned_reason, f"{name} is pinned but says why it is not"
        assert cfg.pinned_by, f"{name}: say which public source the revision / sha256 come from"
    else:
        assert len(cfg.unpinned_reason) > 20, f"{name} points at a moving target without saying why"
    if cfg.sha256:
        assert cfg.pinned_by, name


def test_public_sha256_values_are_pinned():
    for name, sha in ISSUE_23_SHA256.items():
        assert get_pretrained_cfg(name).sha256 == sha, name
    # torchgeo's file names end in the first 8 hex digits of the sha256; Scale-MAE's does not
    for name, sha in ISSUE_23_SHA256.items():
        suffix = os.path.splitext(get_pretrained_cfg(name).source)[0].rsplit("-", 1)[1]
        assert (suffix == sha[:8]) == (name != "scale_mae_vitl16"), name


def test_terramind_tiny_is_two_variants_with_their_own_files():
    current, first = get_pretrained_cfg("terramind_v1_tiny"), get_pretrained_cfg("terramind_v1_tiny_200b")
    a, b = parse_hf_uri(current.source), parse_hf_uri(first.source)
    assert a.repo_id == b.repo_id == "ibm-esa-geospatial/TerraMind-1.0-tiny"
    assert (a.filename, b.filename) == ("TerraMind_v1_tiny.pt", "TerraMind_v1_tiny_200B.pt")
    assert current.pinned and current.sha256 and _COMMIT.match(a.revision)
    assert "200B" in first.notes and first.unpinned_reason
    small = dict(embed_dim=32, depth=1, num_heads=2)
    assert build_encoder("terramind_v1_tiny_200b", **small).embed_dim == 32
    assert sum(p.numel() for p in build_encoder("terramind_v1_tiny_200b").parameters()) == sum(
        p.numel() for p in build_encoder("terramind_v1_tiny").parameters())


def test_pinned_revision_is_requested_and_a_changed_file_is_a_clear_error(tmp_path, monkeypatch):
    """terramind_v1_tiny asks for its file at the pinned commit; a file that is not the pinned
    one is refused before the model is built, naming both hashes, and nothing is kept."""
    cfg = get_pretrained_cfg("terramind_v1_tiny")
    f = parse_hf_uri(cfg.source)
    hub = HubStandIn()
    hub.revisions.add((f.repo_id, f.revision))
    impostor = b"changed in place" * 64
    hub.publish(f.repo_id, f.filename, impostor)
    with serve(hub.handler()) as url:
        monkeypatch.setenv("HF_ENDPOINT", url)
        monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
        monkeypatch.setenv("D2GEO_CACHE", str(tmp_path / "d2geo"))
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
        with pytest.raises(ChecksumMismatchError) as e:
            build_encoder("terramind_v1_tiny", pretrained=True)
    msg = str(e.value)
    assert cfg.sha256 in msg and hashlib.sha256(impostor).hexdigest() in msg and "weights=" in msg
    assert {p for _, p in hub.file_requests()} == {f"/{f.repo_id}/resolve/{f.revision}/{f.filename}"}
    assert [n for _, _, files in os.walk(tmp_path / "hf") for n in files
            if n.startswith(f.filename) or len(n) == 64] == []
