"""Issue 23: the safe loader reads the plain containers official checkpoints carry beside the
weights (SSL4EO-S12's data2vec file stores its ``argparse.Namespace`` as ``args``) through
torch's allow-list of safe globals, and still refuses anything that could run code."""
from __future__ import annotations

import argparse
import os

import pytest
import torch

from d2geo.encoders import CheckpointError, build_encoder, read_checkpoint


class _Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_a_checkpoint_with_its_training_args_namespace_is_read_and_loads(tmp_path):
    small = dict(depth=2)  # DINOv2's tiny test variant, two blocks
    enc = build_encoder("dinov2_test", **small)
    sd = {k: v.clone() for k, v in enc.vit.state_dict().items()}
    path = tmp_path / "official.pth"
    torch.save({"model": sd, "args": argparse.Namespace(arch="vit_small", lr=1.5e-4, bands=["B02", "B03"]),
                "epoch": 99}, path)
    ckpt = read_checkpoint(path)
    assert ckpt["args"].arch == "vit_small" and ckpt["args"].bands == ["B02", "B03"]
    loaded = build_encoder("dinov2_test", weights=str(path), **small)
    assert torch.equal(loaded.vit.pos_embed, sd["pos_embed"])


@pytest.mark.parametrize("payload", [_Payload(), argparse.Namespace(hook=_Payload())])
def test_code_is_still_refused_also_inside_a_namespace(tmp_path, payload):
    path = tmp_path / "evil.pth"
    torch.save({"model": {"w": torch.zeros(1)}, "args": payload}, path)
    with pytest.raises(CheckpointError, match="refusing to load"):
        read_checkpoint(path)
