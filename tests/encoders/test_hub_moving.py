"""Hub files from a moving revision (``main``): recorded on first use, a later swap refused.

The Hub stand-in (tests/http_stub.py) serves the files; moving ``main`` is done by
publishing other bytes and reporting another commit, as the Hub does when a publisher
replaces a file in place (TerraMind's tiny file in 2025).
"""
from __future__ import annotations

import hashlib
import io
import json
import logging

import pytest
import torch

from http_stub import HubStandIn, commit_of, serve

from d2geo.encoders import ChecksumMismatchError, PretrainedCfg, build_encoder, registry
from d2geo.encoders.hub import resolve_weights
from d2geo.encoders.hub_moving import first_seen_path, is_moving_revision
from d2geo.encoders.licenses import PROVENANCE_ATTR

REPO, FILE = "acme/moving", "weights.pth"


@pytest.fixture
def hub(tmp_path, monkeypatch):
    stand_in = HubStandIn()
    with serve(stand_in.handler()) as url:
        monkeypatch.setenv("HF_ENDPOINT", url)
        monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
        monkeypatch.setenv("D2GEO_CACHE", str(tmp_path / "d2geo"))
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
        yield stand_in


def _weights(seed: int) -> bytes:
    enc = build_encoder("dinov2_vits14", embed_dim=48, depth=2, num_heads=3, img_size=56)
    torch.manual_seed(seed)
    for p in enc.parameters():
        torch.nn.init.normal_(p, std=0.02)
    buf = io.BytesIO()
    torch.save(enc.vit.state_dict(), buf)
    return buf.getvalue()


def test_revision_kinds():
    assert is_moving_revision(None) and is_moving_revision("main") and is_moving_revision("v1.0")
    assert not is_moving_revision("a" * 40)


def test_a_file_replaced_at_main_is_refused_naming_both_commits(hub, caplog):
    first = b"first weights" * 50
    uri = hub.publish(REPO, FILE, first)
    with caplog.at_level(logging.WARNING, logger="d2geo.encoders.hub"):
        path = resolve_weights(uri)
    old = commit_of(REPO)
    assert open(path, "rb").read() == first
    # the first use says which commit and file it was, and how to pin them
    assert f"hf://{REPO}@{old}/{FILE}" in caplog.text and hashlib.sha256(first).hexdigest() in caplog.text
    record = json.load(open(first_seen_path()))[uri]
    assert record["commit"] == old and record["sha256"] == hashlib.sha256(first).hexdigest()
    assert resolve_weights(uri) == path  # the same file again: fine

    # the publisher replaces the file in place
    second = b"other weights" * 50
    hub.publish(REPO, FILE, second)
    new = hub.commits[REPO] = "b" * 40
    with pytest.raises(ChecksumMismatchError) as e:
        resolve_weights(uri)
    msg = str(e.value)
    assert old in msg and new in msg and hashlib.sha256(second).hexdigest() in msg
    assert f"hf://{REPO}@{old}/{FILE}" in msg and f"hf://{REPO}@{new}/{FILE}" in msg
    # asking for the new commit by name is an explicit choice, not a silent swap
    assert open(resolve_weights(f"hf://{REPO}@{new}/{FILE}"), "rb").read() == second


def test_a_pinned_sha256_needs_no_record(hub):
    data = b"pinned" * 50
    uri = hub.publish(REPO, FILE, data)
    resolve_weights(uri, sha256=hashlib.sha256(data).hexdigest())
    with pytest.raises(FileNotFoundError):
        open(first_seen_path())


def test_an_unpinned_pretrained_entry_records_its_commit_and_sha256_in_the_model(hub, monkeypatch):
    data = _weights(0)
    uri = hub.publish(REPO, FILE, data)
    cfg = PretrainedCfg(source=uri, license="MIT", unpinned_reason="test: no public commit")
    entry = registry._Entry(registry._REGISTRY["dinov2_vits14"].builder,
                            dict(registry._REGISTRY["dinov2_vits14"].config, embed_dim=48, depth=2, num_heads=3,
                                 img_size=56), cfg)
    monkeypatch.setitem(registry._REGISTRY, "test_moving_dinov2", entry)
    enc = build_encoder("test_moving_dinov2", pretrained=True)
    record = getattr(enc, PROVENANCE_ATTR)
    assert record["source"] == uri and record["license"] == "MIT"
    assert record["commit"] == commit_of(REPO) and record["sha256"] == hashlib.sha256(data).hexdigest()
