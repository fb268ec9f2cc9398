"""The pieces every encoder shares: registry, safe checkpoint reading, metadata schema."""
import os

import pytest
import torch
from safetensors.torch import save_file

from d2geo.encoders import (
    CheckpointError, EncoderInputError, band_wavelengths, build_encoder, list_encoders,
    read_checkpoint,
)
from d2geo.encoders.checkpoint import unwrap_state_dict
from d2geo.encoders.metadata import check_metadata

#: DINOv2's tiny test variant (registers, 64 wide) at two blocks
TINY = dict(depth=2, img_size=56)


class _Payload:
    """Stands in for code hidden in a pickle: unpickling it would call os.system."""

    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_registry_names_and_suggestions():
    names = list_encoders()
    for expected in ["dinov2_vits14", "dinov2_vitg14_reg", "dinov3_vitl16_sat", "dinov3_vitb16"]:
        assert expected in names
    assert list_encoders("dinov2_*_reg") == [
        "dinov2_vitb14_reg", "dinov2_vitg14_reg", "dinov2_vitl14_reg", "dinov2_vits14_reg"]
    with pytest.raises(KeyError, match="Did you mean dinov2_vitb14"):
        build_encoder("dinov2_vitb14x")


@pytest.mark.parametrize("name", ["dinov2_vits14_reg", "dinov3_vits16"])
def test_encoder_attributes(name):
    enc = build_encoder(name, embed_dim=32, depth=2, num_heads=2)
    assert (enc.embed_dim, enc.depth, enc.num_prefix_tokens) == (32, 2, 5)
    assert enc.patch_size in (14, 16)


def test_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"model": {"w": torch.zeros(1)}, "payload": _Payload()}, path)
    with pytest.raises(CheckpointError, match="refusing to load"):
        read_checkpoint(path)
    with pytest.raises(CheckpointError, match="refusing to load"):
        build_encoder("dinov2_test", weights=path, **TINY)


def test_truncated_checkpoints_are_reported(tmp_path):
    enc = build_encoder("dinov2_test", **TINY)
    full = tmp_path / "full.pth"
    torch.save(enc.state_dict(), full)
    cut = tmp_path / "cut.pth"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        read_checkpoint(cut)
    st = tmp_path / "full.safetensors"
    save_file({k: v.contiguous() for k, v in enc.state_dict().items()}, st)
    cut_st = tmp_path / "cut.safetensors"
    cut_st.write_bytes(st.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="truncated"):
        read_checkpoint(cut_st)
    with pytest.raises(CheckpointError, match="not found"):
        read_checkpoint(tmp_path / "missing.pth")


def test_own_format_safetensors_and_lightning_roundtrip(tmp_path):
    src = build_encoder("dinov2_test", **TINY).eval()
    x = torch.randn(1, 3, 42, 56)
    ref = src.forward_features(x, layers=[0, 1])
    st = tmp_path / "enc.safetensors"
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, st)
    lightning = tmp_path / "lightning.ckpt"
    torch.save({"epoch": 3, "global_step": 10, "state_dict": {
        **{f"model.encoder.{k}": v for k, v in src.state_dict().items()},
        "model.decoder.head.weight": torch.zeros(2, 2)}}, lightning)
    for path in (st, lightning):
        enc = build_encoder("dinov2_test", weights=path, **TINY).eval()
        out = enc.forward_features(x, layers=[0, 1])
        for a, b in zip(out, ref):
            torch.testing.assert_close(a, b)


def test_missing_keys_fail_loudly(tmp_path):
    src = build_encoder("dinov2_test", **TINY)
    sd = src.state_dict()
    del sd["vit.blocks.1.attn.qkv.weight"]
    with pytest.raises(CheckpointError, match=r"missing \(vit.blocks.1.attn.qkv.weight\)"):
        build_encoder("dinov2_test", weights=sd, **TINY)
    with pytest.raises(CheckpointError, match="no state dict found"):
        unwrap_state_dict({"epoch": 1, "config": {"a": 1}})


def test_metadata_schema_checks():
    md = check_metadata({"timestamps": [[1.6e9, 1.7e9]], "latlon": [[45.0, 7.0]], "gsd": 10.0,
                         "wavelengths": [0.49, 0.56, 0.665]}, batch_size=1, num_frames=2, num_bands=3)
    assert md["timestamps"].dtype == torch.float64 and md["gsd"].shape == (1,)
    with pytest.raises(EncoderInputError, match="unknown metadata keys"):
        check_metadata({"time": [1.0]}, batch_size=1)
    with pytest.raises(EncoderInputError, match="'latlon' has shape"):
        check_metadata({"latlon": [45.0, 7.0]}, batch_size=1)
    with pytest.raises(EncoderInputError, match="out of range"):
        check_metadata({"latlon": [[7.0, 145.0], [95.0, 0.0]]}, batch_size=2)
    with pytest.raises(EncoderInputError, match="NaN"):
        check_metadata({"gsd": [float("nan")]}, batch_size=1)


def test_band_wavelength_table():
    w = band_wavelengths("sentinel-2-l2a", ["B02", "green", "B8A", "swir22"])
    torch.testing.assert_close(w, torch.tensor([0.493, 0.560, 0.865, 2.190]))
    assert band_wavelengths("HLS", ["nir_narrow"]).item() == pytest.approx(0.865)
    with pytest.raises(KeyError, match="unknown band 'B13'"):
        band_wavelengths("sentinel-2-l2a", ["B13"])
    with pytest.raises(KeyError, match="unknown sensor"):
        band_wavelengths("modis", ["red"])


def test_size_cache_keeps_the_most_recent_sizes_and_is_emptied_when_the_encoder_moves():
    """Per-size tensors (position tables, attention biases): computed once per (grid, device,
    dtype), the least recently used dropped, none kept across a cast, none used while traced."""
    from d2geo.encoders import build_encoder

    enc = build_encoder("prithvi_eo_v1_100", embed_dim=64, depth=2, num_heads=2, num_frames=1)
    cache = enc._pos_cache
    cache.capacity = 2
    a = enc.pos_embed_for((1, 4, 4), torch.device("cpu"), torch.float32)
    assert enc.pos_embed_for((1, 4, 4), torch.device("cpu"), torch.float32) is a and len(cache) == 1
    enc.pos_embed_for((1, 4, 6), torch.device("cpu"), torch.float32)
    enc.pos_embed_for((1, 6, 6), torch.device("cpu"), torch.float32)  # drops (1, 4, 4)
    assert len(cache) == 2
    assert enc.pos_embed_for((1, 4, 4), torch.device("cpu"), torch.float32) is not a
    enc.double()  # a cast empties it: no table of the old dtype is served again
    assert len(cache) == 0
    made = []
    traced = torch.jit.trace(lambda x: enc._pos_cache.get(lambda: made.append(1) or "never keyed",
                                                          lambda: x * 2), torch.ones(2), check_trace=False)
    assert made == [] and len(cache) == 0 and traced(torch.ones(2)).tolist() == [2.0, 2.0]
