"""Issue 23: a checkpoint written by training records the licenses of the encoder weights the
model started from (``GeoCheckpointer.save`` adds ``weights_licenses``), and a model restored
from it carries them on into its next checkpoints."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("detectron2", reason="GeoCheckpointer is d2geo's detectron2 side")

from d2geo.encoders import build_encoder, registry, weights_licenses  # noqa: E402
from d2geo.engine.checkpoint import GeoCheckpointer  # noqa: E402
from d2geo.encoders.checkpoint import read_checkpoint  # noqa: E402

SMALL = dict(embed_dim=32, depth=2, num_heads=2)


def _model(encoder):
    model = torch.nn.Module()
    model.backbone = torch.nn.Module()
    model.backbone.encoder = encoder
    model.head = torch.nn.Linear(4, 2)
    return model


def test_training_checkpoints_record_and_keep_the_weights_licenses(tmp_path, monkeypatch):
    upstream = tmp_path / "up.pth"
    torch.save(dict(build_encoder("dinov2_vits14", **SMALL).vit.state_dict()), upstream)
    monkeypatch.setattr(registry, "_published_weights", lambda name, entry: str(upstream))
    model = _model(build_encoder("dinov2_vits14", pretrained=True, **SMALL))
    expected = weights_licenses(model)
    assert [r["license"] for r in expected] == ["Apache-2.0"]

    GeoCheckpointer(model, str(tmp_path / "run1")).save("model_0000009")
    stored = read_checkpoint(tmp_path / "run1" / "model_0000009.pth")["weights_licenses"]
    assert stored == expected

    # resumed into a model built without the encoder's weights: the licenses come back with the
    # checkpoint and go into the next one
    resumed = _model(build_encoder("dinov2_vits14", **SMALL))
    assert weights_licenses(resumed) == []
    GeoCheckpointer(resumed, str(tmp_path / "run2")).load(str(tmp_path / "run1" / "model_0000009.pth"))
    assert weights_licenses(resumed) == expected
    GeoCheckpointer(resumed, str(tmp_path / "run2")).save("model_final")
    assert read_checkpoint(tmp_path / "run2" / "model_final.pth")["weights_licenses"] == expected
