"""Prithvi-EO fidelity against terratorch's PrithviViT / PrithviMAE (loaded from its wheel).

Random-weight checkpoints are written in the published layouts (v1 flat with decoder
entries, v2 ``encoder.``/``decoder.``, a terratorch Lightning checkpoint, safetensors) and
loaded through ``build_encoder``; the features must match upstream's ``forward_features``.
"""
import logging
from datetime import datetime, timedelta, timezone

import pytest
import torch

from helpers import rel_err, terratorch_prithvi
from d2geo.encoders import CheckpointError, EncoderInputError, build_encoder
from d2geo.encoders import metadata as metadata_mod
from d2geo.encoders.base import time_to_channels
from d2geo.encoders import prithvi as prithvi_mod

TINY = dict(embed_dim=64, depth=3, num_heads=4)
HLS = ("blue", "green", "red", "nir_narrow", "swir_1", "swir_2")
TOL = 1e-4


@pytest.fixture(scope="module")
def ref():
    return terratorch_prithvi()


def _randomize(model: torch.nn.Module) -> torch.nn.Module:
    """Perturb every parameter (norms, biases, scales included) so none sits at its init."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("scale"):
                p.uniform_(0.2, 0.8)
            elif "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.2 * torch.randn_like(p))
            else:
                p.add_(0.05 * torch.randn_like(p))
    return model.eval()


def _mae(ref, *, tubelet=1, num_frames=3, tl=False, img_size=64):
    return _randomize(ref.PrithviMAE(
        img_size=img_size, patch_size=(tubelet, 16, 16), num_frames=num_frames, in_chans=6,
        decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=4, mlp_ratio=4.0,
        coords_encoding=["time", "location"] if tl else None, coords_scale_learn=tl, **TINY))


def _v1_flat(mae) -> dict:
    """The layout of the published Prithvi_100M.pt: no prefixes, decoder_* and mask_token."""
    out = {}
    for k, v in mae.state_dict().items():
        out[k.split(".", 1)[1]] = v  # 'encoder.blocks..' -> 'blocks..', 'decoder.decoder_..' -> 'decoder_..'
    assert "mask_token" in out and "decoder_pos_embed" in out and "pos_embed" in out
    return out


def _upstream(vit, x, tc=None, lc=None, *, norm: bool):
    """Upstream per-block tokens. Its forward_features returns raw block outputs except the
    last, which it replaces by the final norm; the raw last one is taken with a hook."""
    raw_last = {}
    hook = vit.blocks[-1].register_forward_hook(lambda m, i, o: raw_last.setdefault("x", o.clone()))
    try:
        with torch.no_grad():
            outs = vit.forward_features(x, tc, lc)
            if norm:
                return [vit.norm(o) for o in outs[:-1]] + [outs[-1]]
            return outs[:-1] + [raw_last["x"]]
    finally:
        hook.remove()


def _to_map(tokens, grid):
    B, _, D = tokens.shape
    return tokens[:, 1:].reshape(B, *grid, D).permute(0, 4, 1, 2, 3)


def _compare(name, ours_enc, vit, x, grid, *, metadata=None, tc=None, lc=None):
    worst = 0.0
    layers = list(range(ours_enc.depth))
    for norm in (False, True):
        refs = _upstream(vit, x, tc, lc, norm=norm)
        with torch.no_grad():
            ours = ours_enc.forward_features(x, layers=layers, norm=norm, metadata=metadata)
        for i in layers:
            err = rel_err(ours[i], _to_map(refs[i], grid))
            assert err <= TOL, (name, norm, i, err)
            worst = max(worst, err)
    logging.getLogger(__name__).info("prithvi fidelity %s: max rel err %.2e", name, worst)
    return worst


def _epoch(y, m, d, hh=0, mm=0, ss=0.0):
    return (datetime(y, m, d, hh, mm, tzinfo=timezone.utc) + timedelta(seconds=ss)).timestamp()


# -- fidelity --------------------------------------------------------------------------------
def test_v1_flat_checkpoint_native_and_non_native_size(ref, tmp_path):
    mae = _mae(ref, num_frames=3)
    path = tmp_path / "Prithvi_100M.pt"
    torch.save(_v1_flat(mae), path)
    enc = build_encoder("prithvi_eo_v1_100", weights=path, img_size=64, **TINY).eval()
    assert enc.num_frames == 3 and enc.tubelet_size == 1 and enc.bands == HLS
    _compare("v1 flat 3x64x64", enc, mae.encoder, torch.randn(2, 6, 3, 64, 64), (3, 4, 4))
    # 64x96 and 96x48 are off the reference 4x4 grid: upstream interpolates its table bicubically
    _compare("v1 flat 3x64x96", enc, mae.encoder, torch.randn(2, 6, 3, 64, 96), (3, 4, 6))
    _compare("v1 flat 3x96x48", enc, mae.encoder, torch.randn(1, 6, 3, 96, 48), (3, 6, 3))


def test_v2_checkpoint_tubelet_2_over_4_frames(ref, tmp_path):
    mae = _mae(ref, tubelet=2, num_frames=4)
    path = tmp_path / "Prithvi_EO_V2_300M.pt"
    torch.save(mae.state_dict(), path)
    enc = build_encoder("prithvi_eo_v2_300", weights=path, img_size=64, num_frames=4, tubelet_size=2,
                        **TINY).eval()
    _compare("v2 tubelet2 4x64x64", enc, mae.encoder, torch.randn(2, 6, 4, 64, 64), (2, 4, 4))
    _compare("v2 tubelet2 4x64x96", enc, mae.encoder, torch.randn(2, 6, 4, 64, 96), (2, 4, 6))


def test_v2_tl_with_coordinates(ref, tmp_path, caplog):
    mae = _mae(ref, num_frames=3, tl=True)
    sd = mae.state_dict()
    assert {"encoder.temporal_embed_enc.scale", "decoder.location_embed_dec.scale"} <= set(sd)
    path = tmp_path / "Prithvi_EO_V2_300M_TL.pt"
    torch.save(sd, path)
    enc = build_encoder("prithvi_eo_v2_300_tl", weights=path, img_size=64, num_frames=3, **TINY).eval()
    assert enc.temporal_embed_enc.scale.item() == pytest.approx(mae.encoder.temporal_embed_enc.scale.item())
    # Day of year counts from 1: 2020 is a leap year, so 31 December is day 366.
    ts = torch.tensor([[_epoch(2020, 1, 1, 0, 0, 0.5), _epoch(2020, 4, 9, 13), _epoch(2020, 12, 31, 23, 59, 59.9)],
                       [_epoch(2023, 7, 1), _epoch(2023, 7, 17, 10), _epoch(2024, 2, 29, 12)]], dtype=torch.float64)
    tc = torch.tensor([[[2020, 1], [2020, 100], [2020, 366]], [[2023, 182], [2023, 198], [2024, 60]]],
                      dtype=torch.float32)
    latlon = torch.tensor([[38.9, -77.0], [-33.9, 151.2]])
    meta = {"timestamps": ts, "latlon": latlon}
    for size, grid in (((64, 64), (3, 4, 4)), ((64, 96), (3, 4, 6))):
        x = torch.randn(2, 6, 3, *size)
        _compare(f"v2 TL time+loc 3x{size[0]}x{size[1]}", enc, mae.encoder, x, grid, metadata=meta, tc=tc, lc=latlon)
    x = torch.randn(2, 6, 3, 64, 64)
    # Only location known, then nothing known: upstream leaves the unknown encoding out.
    _compare("v2 TL loc only", enc, mae.encoder, x, (3, 4, 4), metadata={"latlon": latlon}, lc=latlon)
    metadata_mod._WARNED.discard(("PrithviEncoder", "timestamps"))
    metadata_mod._WARNED.discard(("PrithviEncoder", "latlon"))
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        _compare("v2 TL no metadata", enc, mae.encoder, x, (3, 4, 4))
    warnings = [r.getMessage() for r in caplog.records if "PrithviEncoder" in r.getMessage()]
    assert len(warnings) == 2, warnings  # one per key, once: the second forward pass did not warn again
    # The encodings do matter: wrong dates give other features.
    with torch.no_grad():
        a = enc.forward_features(x, layers=-1, metadata=meta)[0]
        b = enc.forward_features(x, layers=-1, metadata={**meta, "timestamps": ts + 40 * 86400})[0]
    assert rel_err(a, b) > 1e-3


def test_lightning_and_safetensors_checkpoints(ref, tmp_path):
    from safetensors.torch import save_file

    vit = _randomize(ref.PrithviViT(img_size=64, patch_size=(1, 16, 16), num_frames=2, in_chans=6, **TINY))
    wrapped = {f"model.encoder.{k}": v for k, v in vit.state_dict().items()}
    wrapped["model.decoder.head.weight"] = torch.randn(8, 64)
    ckpt = tmp_path / "epoch=3.ckpt"
    torch.save({"state_dict": wrapped, "epoch": 3, "global_step": 100}, ckpt)
    enc = build_encoder("prithvi_eo_v2_300", weights=ckpt, img_size=64, num_frames=2, **TINY).eval()
    _compare("lightning 2x64x96", enc, vit, torch.randn(2, 6, 2, 64, 96), (2, 4, 6))

    st = tmp_path / "prithvi.safetensors"
    save_file({k: v.contiguous() for k, v in vit.state_dict().items()}, str(st))
    enc2 = build_encoder("prithvi_eo_v2_300", weights=st, img_size=64, num_frames=2, **TINY).eval()
    _compare("safetensors 2x64x64", enc2, vit, torch.randn(1, 6, 2, 64, 64), (2, 4, 4))

    # d2geo's own keys round-trip, and the position table is not among them.
    own = tmp_path / "own.pth"
    torch.save({"model": enc.state_dict()}, own)
    assert not any("pos" in k for k in enc.state_dict())
    enc3 = build_encoder("prithvi_eo_v2_300", weights=own, img_size=64, num_frames=2, **TINY).eval()
    _compare("d2geo keys 2x64x64", enc3, vit, torch.randn(1, 6, 2, 64, 64), (2, 4, 4))


def test_single_frame_4d_input_and_time_to_channels(ref, tmp_path):
    vit = _randomize(ref.PrithviViT(img_size=64, patch_size=(1, 16, 16), num_frames=1, in_chans=6, **TINY))
    enc = build_encoder("prithvi_eo_v2_300", weights=vit.state_dict(), img_size=64, num_frames=1, **TINY).eval()
    x = torch.randn(2, 6, 64, 64)
    with torch.no_grad():
        ours = enc.forward_features(x, layers=[0, 2], norm=False)
        refs = _upstream(vit, x, norm=False)
        assert ours[0].shape == (2, 64, 1, 4, 4)
        assert rel_err(ours[1], _to_map(refs[2], (1, 4, 4))) <= TOL
        # terratorch's 2-D layout for image decoders
        ref2d = vit.prepare_features_for_image_model(refs)
        assert rel_err(time_to_channels(ours[1]), ref2d[2]) <= TOL


def test_time_to_channels_layout_with_two_token_frames(ref):
    vit = _randomize(ref.PrithviViT(img_size=64, patch_size=(2, 16, 16), num_frames=4, in_chans=6, **TINY))
    enc = build_encoder("prithvi_eo_v2_300", weights=vit.state_dict(), img_size=64, num_frames=4, tubelet_size=2,
                        **TINY).eval()
    x = torch.randn(2, 6, 4, 64, 64)
    with torch.no_grad():
        ours = enc.forward_features(x, layers=[1], norm=False)[0]
        ref2d = vit.prepare_features_for_image_model(_upstream(vit, x, norm=False))[1]
    assert ref2d.shape == (2, 128, 4, 4)
    assert rel_err(time_to_channels(ours), ref2d) <= TOL


@pytest.mark.slow
def test_real_size_v2_300_tl_architecture(ref):
    """prithvi_eo_v2_300_tl as registered (1024 wide, 24 blocks, patch 16, 224) with random weights."""
    torch.manual_seed(1)
    vit = ref.PrithviViT(img_size=224, patch_size=(1, 16, 16), num_frames=1, in_chans=6, embed_dim=1024, depth=24,
                         num_heads=16, coords_encoding=["time", "location"], coords_scale_learn=True).eval()
    with torch.no_grad():
        vit.temporal_embed_enc.scale.fill_(0.3)
        vit.location_embed_enc.scale.fill_(0.7)
    enc = build_encoder("prithvi_eo_v2_300_tl", weights={"encoder." + k: v for k, v in vit.state_dict().items()},
                        num_frames=1).eval()
    assert (enc.embed_dim, enc.depth, enc.patch_size, enc.num_prefix_tokens) == (1024, 24, 16, 1)
    x = torch.randn(1, 6, 224, 224)
    tc = torch.tensor([[[2022, 250]]], dtype=torch.float32)
    lc = torch.tensor([[12.5, 77.6]])
    meta = {"timestamps": torch.tensor([[_epoch(2022, 9, 7, 10, 30)]], dtype=torch.float64), "latlon": lc}
    with torch.inference_mode():
        outs = vit.forward_features(x, tc, lc)
        ours = enc.forward_features(x, layers=[5, 23], norm=True, metadata=meta)
        normed5 = vit.norm(outs[5])
    errs = [rel_err(ours[0], _to_map(normed5, (1, 14, 14))), rel_err(ours[1], _to_map(outs[23], (1, 14, 14)))]
    logging.getLogger(__name__).info("prithvi fidelity real-size v2_300_tl: rel errs %s", errs)
    assert max(errs) <= TOL, errs


def test_registered_variants_match_terratorch_table():
    expect = {
        "prithvi_eo_v1_100": (768, 12, 12, 16, 3, ()),
        "prithvi_eo_v2_300": (1024, 24, 16, 16, 4, ()),
        "prithvi_eo_v2_300_tl": (1024, 24, 16, 16, 4, ("time", "location")),
        "prithvi_eo_v2_600": (1280, 32, 16, 14, 4, ()),
        "prithvi_eo_v2_600_tl": (1280, 32, 16, 14, 4, ("time", "location")),
    }
    from d2geo.encoders import get_encoder_config

    for name, (dim, depth, heads, patch, frames, coords) in expect.items():
        cfg = get_encoder_config(name)
        got = (cfg["embed_dim"], cfg["depth"], cfg["num_heads"], cfg["patch_size"], cfg["num_frames"],
               tuple(cfg.get("coords_encoding", ())))
        assert got == (dim, depth, heads, patch, frames, coords), name
        assert cfg.get("coords_scale_learn", False) == bool(coords)


# -- bands and patch size --------------------------------------------------------------------
def test_band_selection_matches_full_encoder_with_zeroed_bands(ref):
    mae = _mae(ref, num_frames=2)
    sd = mae.state_dict()
    full = build_encoder("prithvi_eo_v2_300", weights=sd, img_size=64, num_frames=2, **TINY).eval()
    sub_bands = ("SWIR_1", "red", "vv", "blue")  # reordered subset, case-insensitive, one new band
    sub = build_encoder("prithvi_eo_v2_300", weights=sd, img_size=64, num_frames=2, bands=sub_bands, **TINY).eval()
    assert sub.in_chans == 4
    assert sub.patch_embed["proj"].weight[:, 2].abs().max() == 0  # the new band starts at zero
    x_sub = torch.randn(2, 4, 2, 64, 64)
    x_sub[:, 2] = 5.0  # whatever the new band holds must not matter yet
    x_full = torch.zeros(2, 6, 2, 64, 64)
    for j, band in enumerate(sub_bands):
        if band.lower() in HLS:
            x_full[:, HLS.index(band.lower())] = x_sub[:, j]
    with torch.no_grad():
        a = sub.forward_features(x_sub, layers=[0, 2])
        b = full.forward_features(x_full, layers=[0, 2])
        # the same input in the pretrained order would give other features if bands were mixed up
        x_wrong = x_full.clone()
        x_wrong[:, [0, 4]] = x_full[:, [4, 0]]
        c = full.forward_features(x_wrong, layers=[2])[0]
    for o, r in zip(a, b):
        assert rel_err(o, r) <= 1e-5
    assert rel_err(a[1], c) > 1e-2


def test_patch_size_override_resamples_kernel(ref, tmp_path):
    from timm.layers import resample_patch_embed

    mae = _mae(ref, num_frames=1)
    sd = mae.state_dict()
    enc = build_encoder("prithvi_eo_v2_300", weights=sd, img_size=64, num_frames=1, patch_size=8, **TINY).eval()
    k16 = sd["encoder.patch_embed.proj.weight"]
    expected = resample_patch_embed(k16.reshape(64, 6, 16, 16), [8, 8]).reshape(64, 6, 1, 8, 8)
    assert enc.patch_embed["proj"].weight.shape == (64, 6, 1, 8, 8)
    assert rel_err(enc.patch_embed["proj"].weight.detach(), expected) <= 1e-6
    with torch.no_grad():
        out = enc.forward_features(torch.randn(1, 6, 1, 64, 48), layers=-1)[0]
    assert out.shape == (1, 64, 1, 8, 6)


def test_drop_path_rate_is_applied_to_every_block():
    enc = build_encoder("prithvi_eo_v2_300", num_frames=1, drop_path_rate=0.2, img_size=64, **TINY)
    assert all(b.drop_path1.drop_prob == 0.2 for b in enc.blocks)


# -- position table cache --------------------------------------------------------------------
def test_pos_table_is_cached_per_grid(monkeypatch):
    calls = []
    real = prithvi_mod.prithvi_pos_table

    def counting(*args, **kwargs):
        calls.append(args[2])
        return real(*args, **kwargs)

    monkeypatch.setattr(prithvi_mod, "prithvi_pos_table", counting)
    enc = build_encoder("prithvi_eo_v2_300", img_size=64, num_frames=2, **TINY).eval()
    with torch.no_grad():
        a = enc.forward_features(torch.randn(1, 6, 2, 64, 64))[0]
        enc.forward_features(torch.randn(1, 6, 2, 64, 64))
        assert calls == [(2, 4, 4)]
        enc.forward_features(torch.randn(1, 6, 2, 64, 96))
        assert calls == [(2, 4, 4), (2, 4, 6)]
        enc.forward_features(torch.randn(1, 6, 2, 64, 64))
        assert len(calls) == 2
        enc.double()  # a new dtype gets its own table, and the old ones are dropped
        b = enc.forward_features(torch.randn(1, 6, 2, 64, 64, dtype=torch.float64))[0]
    assert len(calls) == 3 and b.dtype == torch.float64 and a.shape == b.shape
    assert "pos" not in " ".join(enc.state_dict())


def test_pos_table_equals_upstream_table(ref):
    """The 3D sine-cosine table itself, for tiny and real widths."""
    for dim, grid in ((64, (3, 4, 4)), (1024, (1, 14, 14)), (1280, (4, 16, 16))):
        up = torch.from_numpy(ref.get_3d_sincos_pos_embed(dim, grid, add_cls_token=False)).float()
        ours = prithvi_mod.prithvi_pos_table(dim, grid[1:], grid)
        assert rel_err(ours, up) <= 1e-6


# -- bad input -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_enc():
    return build_encoder("prithvi_eo_v2_300", img_size=64, num_frames=4, tubelet_size=2, **TINY).eval()


def test_wrong_band_count(tiny_enc):
    with pytest.raises(EncoderInputError, match="5 bands but the encoder expects 6"):
        tiny_enc.forward_features(torch.randn(1, 5, 4, 64, 64))


def test_frames_not_divisible_by_tubelet_at_build_and_forward(tiny_enc):
    with pytest.raises(ValueError, match=r"num_frames=3 is not divisible by tubelet_size=2"):
        build_encoder("prithvi_eo_v2_300", num_frames=3, tubelet_size=2, **TINY)
    with pytest.raises(EncoderInputError, match=r"3 frames, not divisible by tubelet_size=2"):
        tiny_enc.forward_features(torch.randn(1, 6, 3, 64, 64))


def test_num_frames_mismatch(tiny_enc):
    with pytest.raises(EncoderInputError, match=r"6 frames but the encoder was built for num_frames=4"):
        tiny_enc.forward_features(torch.randn(1, 6, 6, 64, 64))
    with pytest.raises(EncoderInputError, match=r"4-D image .* num_frames=4"):
        tiny_enc.forward_features(torch.randn(1, 6, 64, 64))


def test_size_not_multiple_of_patch(tiny_enc):
    with pytest.raises(EncoderInputError, match="multiple of the patch size 16"):
        tiny_enc.forward_features(torch.randn(1, 6, 4, 60, 64))


def test_timestamps_of_wrong_shape(ref, tmp_path):
    enc = build_encoder("prithvi_eo_v2_300_tl", img_size=64, num_frames=2, **TINY).eval()
    with pytest.raises(EncoderInputError, match="timestamps"):
        enc.forward_features(torch.randn(1, 6, 2, 64, 64), metadata={"timestamps": torch.zeros(1, 3)})


def test_time_encoding_needs_tubelet_1():
    with pytest.raises(ValueError, match="tubelet_size=1"):
        build_encoder("prithvi_eo_v2_300_tl", num_frames=4, tubelet_size=2, **TINY)


def test_dinov2_checkpoint_is_rejected(tmp_path):
    dino = build_encoder("dinov2_vits14", embed_dim=64, depth=3, num_heads=4, img_size=56)
    path = tmp_path / "dinov2.pth"
    torch.save(dino.state_dict(), path)
    with pytest.raises(CheckpointError, match="not a Prithvi checkpoint"):
        build_encoder("prithvi_eo_v2_300", weights=path, img_size=64, num_frames=1, **TINY)
    with pytest.raises(CheckpointError):
        build_encoder("prithvi_eo_v2_300", weights={"head.weight": torch.zeros(3, 3)}, **TINY)


def test_checkpoint_mismatches_are_explained(ref, tmp_path):
    plain = _mae(ref, num_frames=1).state_dict()
    with pytest.raises(CheckpointError, match="without '_tl'"):
        build_encoder("prithvi_eo_v2_300_tl", weights=plain, img_size=64, num_frames=1, **TINY)
    with pytest.raises(CheckpointError, match="tubelet_size=1"):
        build_encoder("prithvi_eo_v2_300", weights=plain, img_size=64, num_frames=2, tubelet_size=2, **TINY)
    with pytest.raises(CheckpointError, match="pretrained_bands"):
        build_encoder("prithvi_eo_v2_300", weights=plain, img_size=64, num_frames=1,
                      pretrained_bands=HLS[:4], **TINY)
    # A TL checkpoint in a plain encoder: the encodings are dropped, the rest loads.
    tl = _mae(ref, num_frames=1, tl=True)
    enc = build_encoder("prithvi_eo_v2_300", weights=tl.state_dict(), img_size=64, num_frames=1, **TINY).eval()
    _compare("TL ckpt in plain encoder", enc, tl.encoder, torch.randn(1, 6, 1, 64, 64), (1, 4, 4))


def test_year_and_day_of_year_from_timestamps():
    ts = torch.tensor([[_epoch(2021, 1, 1), _epoch(2020, 12, 31, 23, 59, 59.5), _epoch(1969, 12, 31, 12)]],
                      dtype=torch.float64)
    got = prithvi_mod.timestamps_to_year_doy(ts)
    assert got.dtype == torch.float32 and got.shape == (1, 3, 2)
    assert got.tolist() == [[[2021.0, 1.0], [2020.0, 366.0], [1969.0, 365.0]]]

