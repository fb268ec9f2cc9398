"""Clay fidelity: the upstream ``Encoder`` of the claymodel 1.5.0 wheel is the reference."""
import logging
import math
import re
from datetime import datetime, timezone

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from helpers import claymodel, load_upstream_module, rel_err
from d2geo.encoders import CheckpointError, EncoderInputError, band_wavelengths, build_encoder
from d2geo.encoders import metadata as metadata_module
from d2geo.encoders.checkpoint import load_encoder_weights
from d2geo.encoders.clay import clay_latlon_code, clay_time_code

TINY_REF = dict(dim=64, depth=3, heads=4, dim_head=16, mlp_ratio=2)
TINY = dict(embed_dim=64, depth=3, num_heads=4, head_dim=16, mlp_ratio=2.0)

S2_BANDS = ["blue", "green", "red", "rededge1", "rededge2", "rededge3", "nir", "nir08",
            "swir16", "swir22"]
NAIP_BANDS = ["red", "green", "blue", "nir"]
# (sensor, bands, gsd, two acquisitions as (UTC datetime, lat, lon))
S2 = ("sentinel-2-l2a", S2_BANDS, 10.0,
      [(datetime(2020, 10, 22, 10, 0, 51, tzinfo=timezone.utc), 47.05, 15.43),
       (datetime(2023, 1, 2, 3, 59, 0, tzinfo=timezone.utc), -33.9, 151.2)])
NAIP = ("naip", NAIP_BANDS, 0.6,
        [(datetime(2021, 7, 4, 17, 30, tzinfo=timezone.utc), 38.9, -77.04),
         (datetime(2019, 12, 30, 23, 5, tzinfo=timezone.utc), 44.97, -93.26)])
#: Clay's configs/metadata.yaml, in the band orders above (upstream feeds these unchanged)
CLAY_WAVELENGTHS = {
    "sentinel-2-l2a": [0.493, 0.56, 0.665, 0.704, 0.74, 0.783, 0.842, 0.865, 1.61, 2.19],
    "naip": [0.65, 0.56, 0.48, 0.842],
}


@pytest.fixture(scope="module")
def upstream():
    """claymodel's model.py (with utils, factory and backbone under their ``src.*`` names)."""
    return claymodel()


def _ref_encoder(upstream, **cfg):
    ref = upstream.Encoder(mask_ratio=0.0, patch_size=8, shuffle=False, **{**TINY_REF, **cfg}).eval()
    with torch.no_grad():  # non-trivial layer norms
        for name, p in ref.named_parameters():
            if "norm" in name:
                p.add_(torch.randn_like(p) * 0.2)
    return ref


def _lightning(ref, upstream=None):
    """A Clay Lightning checkpoint dict: encoder, decoder, teacher and projection head."""
    sd = {f"model.encoder.{k}": v for k, v in ref.state_dict().items()}
    if upstream is not None:
        dec = upstream.Decoder(mask_ratio=0.75, patch_size=8, encoder_dim=ref.dim, dim=32, depth=1,
                               heads=2, dim_head=16, mlp_ratio=2)
        sd.update({f"model.decoder.{k}": v for k, v in dec.state_dict().items()})
    sd.update({"model.teacher.patch_embed.proj.weight": torch.randn(8, 3, 14, 14),
               "model.teacher.blocks.0.attn.qkv.weight": torch.randn(24, 8),
               "model.proj.weight": torch.randn(8, ref.dim)})
    return {"state_dict": sd, "epoch": 76, "global_step": 1234,
            "pytorch-lightning_version": "2.4.0",
            "hyper_parameters": {"model_size": "large", "patch_size": 8, "mask_ratio": 0.75,
                                 "dolls": [16, 32, 64], "lr": 5e-6}}


def _clay_time_latlon(acquisitions, order):
    """Clay's metadata values as its tutorials and stacchip build them, in ``order``."""
    time, place = [], []
    for when, lat, lon in acquisitions:
        week = when.isocalendar()[1] * 2 * math.pi / 52
        hour = when.hour * 2 * math.pi / 24
        time.append([math.sin(week), math.cos(week), math.sin(hour), math.cos(hour)])
        la, lo = math.radians(lat), math.radians(lon)
        lat_pair, lon_pair = [math.sin(la), math.cos(la)], [math.sin(lo), math.cos(lo)]
        place.append(lon_pair + lat_pair if order == "lon_first" else lat_pair + lon_pair)
    return torch.tensor(time), torch.tensor(place)


def _our_metadata(sensor, bands, gsd, acquisitions):
    return {
        "wavelengths": band_wavelengths(sensor, bands),
        "gsd": torch.full((len(acquisitions),), gsd),
        "timestamps": torch.tensor([[a[0].timestamp()] for a in acquisitions], dtype=torch.float64),
        "latlon": torch.tensor([[a[1], a[2]] for a in acquisitions]),
    }


def _run_ref(ref, x, time, latlon, gsd, waves):
    """Upstream block outputs (cls first) and its final (normed) output."""
    outs = []
    hooks = [layer[1].register_forward_hook(lambda m, i, o: outs.append(i[0] + o))
             for layer in ref.transformer.layers]
    try:
        with torch.no_grad():
            final, *_ = ref({"pixels": x, "time": time, "latlon": latlon,
                             "gsd": torch.tensor(gsd), "waves": waves})
    finally:
        for h in hooks:
            h.remove()
    return outs, final


def _as_map(tokens, h, w):
    return tokens[:, 1:].reshape(tokens.shape[0], h, w, -1).permute(0, 3, 1, 2)


def _check_layers(ours, ref_outs, ref_final, ref_norm, x, metadata, h, w, errors):
    with torch.no_grad():
        raw = ours.forward_features(x, layers=[0, 1, 2], norm=False, metadata=metadata)
        normed = ours.forward_features(x, layers=[0, 1, 2], norm=True, metadata=metadata)
    for i in range(3):
        errors.append(rel_err(raw[i], _as_map(ref_outs[i], h, w)))
        with torch.no_grad():
            errors.append(rel_err(normed[i], _as_map(ref_norm(ref_outs[i]), h, w)))
    errors.append(rel_err(normed[2], _as_map(ref_final, h, w)))


@pytest.mark.parametrize("sensor,sizes,order", [
    (S2, [(256, 256), (72, 72)], "lon_first"),
    (NAIP, [(224, 224), (40, 40)], "lat_first"),
], ids=["sentinel2", "naip"])
def test_matches_upstream_encoder(upstream, sensor, sizes, order, tmp_path):
    """Every block, raw and normed, at the pretraining chip size and another size, from a
    Lightning checkpoint file, with real Sentinel-2 / NAIP metadata."""
    name, bands, gsd, acq = sensor
    ref = _ref_encoder(upstream)
    path = tmp_path / "clay.ckpt"
    torch.save(_lightning(ref, upstream), path)
    ours = build_encoder("clay_v1_5_large", weights=path, latlon_order=order, **TINY).eval()
    waves = torch.tensor(CLAY_WAVELENGTHS[name])
    time, latlon = _clay_time_latlon(acq, order)
    metadata = _our_metadata(name, bands, gsd, acq)
    errors = []
    for H, W in sizes:
        x = torch.randn(2, len(bands), H, W)
        outs, final = _run_ref(ref, x, time, latlon, gsd, waves)
        _check_layers(ours, outs, final, ref.transformer.norm, x, metadata, H // 8, W // 8, errors)
    assert max(errors) <= 1e-4, errors


def test_per_sample_gsd_matches_upstream_run_per_sample(upstream):
    """Upstream takes one gsd per batch; ours gives every sample its own."""
    ref = _ref_encoder(upstream)
    ours = build_encoder("clay_v1_base", weights=_lightning(ref), **TINY).eval()
    acq = S2[3] + NAIP[3][:1]
    gsds = [10.0, 30.0, 0.5]
    metadata = _our_metadata("naip", NAIP_BANDS, 1.0, acq)
    metadata["gsd"] = torch.tensor(gsds)
    x = torch.randn(3, 4, 48, 48)
    with torch.no_grad():
        feats = ours.forward_features(x, layers=[0, 2], norm=True, metadata=metadata)
    time, latlon = _clay_time_latlon(acq, "lon_first")
    for b, g in enumerate(gsds):
        outs, final = _run_ref(ref, x[b:b + 1], time[b:b + 1], latlon[b:b + 1], g,
                               metadata["wavelengths"])
        with torch.no_grad():
            assert rel_err(feats[0][b:b + 1], _as_map(ref.transformer.norm(outs[0]), 6, 6)) <= 1e-4
        assert rel_err(feats[1][b:b + 1], _as_map(final, 6, 6)) <= 1e-4
    # and the samples really differ by their gsd only through the position code
    assert rel_err(feats[1][0], feats[1][1]) > 1e-2


def test_non_square_inputs(upstream):
    """h x w grids: (a) on a square crop the embedded tokens are upstream's for that crop;
    (b) the whole encoder equals upstream's pieces composed on the h x w grid, with
    upstream's own ``posemb_sincos_2d_with_gsd(h, w)`` (rows = y, columns = x)."""
    utils = load_upstream_module("claymodel", "utils.py", "_ref_clay_utils", aliases=("src.utils",))
    ref = _ref_encoder(upstream)
    ours = build_encoder("clay_v1_base", weights=_lightning(ref), **TINY).eval()
    metadata = _our_metadata("naip", NAIP_BANDS, 0.6, NAIP[3])
    time, latlon = _clay_time_latlon(NAIP[3], "lon_first")
    waves, gsd = metadata["wavelengths"], torch.tensor(0.6)
    x = torch.randn(2, 4, 40, 64)  # 5 x 8 tokens
    h, w = 5, 8

    # (a) square crop, tokens before the first block
    seen = []
    hook = ref.transformer.register_forward_pre_hook(lambda m, a: seen.append(a[0]))
    with torch.no_grad():
        ref({"pixels": x[..., :40], "time": time, "latlon": latlon, "gsd": gsd, "waves": waves})
        tokens, grid, _ = ours._embed(x, metadata)
    hook.remove()
    assert grid == (h, w)
    ours_crop = tokens[:, 1:].reshape(2, h, w, -1)[:, :, :5]
    assert rel_err(ours_crop, seen[0][:, 1:].reshape(2, 5, 5, -1)) <= 1e-6
    assert rel_err(tokens[:, :1], seen[0][:, :1]) == 0  # cls token

    # (b) the whole encoder
    with torch.no_grad():
        patches, _ = ref.to_patch_embed(x, waves)
        pos = utils.posemb_sincos_2d_with_gsd(h=h, w=w, dim=ref.dim - 8, gsd=gsd)
        enc = torch.cat([pos.expand(2, -1, -1), torch.cat([time, latlon], 1)[:, None].expand(2, h * w, 8)], -1)
        seq = torch.cat([ref.cls_token.expand(2, -1, -1), patches + enc], dim=1)
        outs = []
        for attn, ff in ref.transformer.layers:
            seq = attn(seq) + seq
            seq = ff(seq) + seq
            outs.append(seq)
        feats = ours.forward_features(x, layers=[0, 1, 2], norm=False, metadata=metadata)
        last = ours.forward_features(x, layers=-1, norm=True, metadata=metadata)[0]
        assert rel_err(last, _as_map(ref.transformer.norm(seq), h, w)) <= 1e-4
    for f, o in zip(feats, outs):
        assert rel_err(f, _as_map(o, h, w)) <= 1e-4


_TO_UPSTREAM = [  # d2geo key prefix -> claymodel Encoder key prefix (test-side, for the meta build)
    (r"^patch_embed\.wave_mlp\.fc1\.", "patch_embedding.fclayer.l1."),
    (r"^patch_embed\.wave_mlp\.fc2\.", "patch_embedding.fclayer.l2."),
    (r"^patch_embed\.generator\.mixer\.", "patch_embedding.weight_generator.encoder.layers.0."),
    (r"^patch_embed\.generator\.to_weight\.", "patch_embedding.weight_generator.fc_weight."),
    (r"^patch_embed\.generator\.to_bias\.", "patch_embedding.weight_generator.fc_bias."),
    (r"^patch_embed\.generator\.", "patch_embedding.weight_generator."),
    (r"^blocks\.(\d+)\.norm1\.", r"transformer.layers.\1.0.norm."),
    (r"^blocks\.(\d+)\.attn\.qkv\.", r"transformer.layers.\1.0.to_qkv."),
    (r"^blocks\.(\d+)\.attn\.proj\.", r"transformer.layers.\1.0.to_out."),
    (r"^blocks\.(\d+)\.norm2\.", r"transformer.layers.\1.1.net.0."),
    (r"^blocks\.(\d+)\.mlp\.fc1\.", r"transformer.layers.\1.1.net.1."),
    (r"^blocks\.(\d+)\.mlp\.fc2\.", r"transformer.layers.\1.1.net.3."),
    (r"^norm\.", "transformer.norm."),
]


def _upstream_key(key):
    for pattern, repl in _TO_UPSTREAM:
        new, n = re.subn(pattern, repl, key)
        if n:
            return new
    return key


@pytest.mark.slow
@pytest.mark.parametrize("name,size", [("clay_v1_5_large", "large"), ("clay_v1_base", "base")])
def test_real_size_architectures_with_random_weights(upstream, name, size, monkeypatch):
    """clay_v1_5_large (clay-v1.5.ckpt) and clay_v1_base (clay-v1-base.ckpt) with the
    encoder sizes upstream's clay_mae_large / clay_mae_base pass on, random weights and a
    small input. To stay fast the upstream encoder is built on the meta device and shares
    our random tensors."""
    monkeypatch.setattr(upstream, "ClayMAE", lambda **kw: kw)  # no teacher download
    args = getattr(upstream, f"clay_mae_{size}")()
    dims = {k: args[k] for k in ("dim", "depth", "heads", "dim_head", "mlp_ratio")}
    ours = build_encoder(name).eval()
    assert (ours.embed_dim, ours.depth, ours.patch_size, ours.num_prefix_tokens) == (
        dims["dim"], dims["depth"], 8, 1)
    with torch.device("meta"):
        ref = upstream.Encoder(mask_ratio=0.0, patch_size=8, shuffle=False, **dims).eval()
    ref.load_state_dict({_upstream_key(k): v for k, v in ours.state_dict().items()},
                        strict=True, assign=True)
    with torch.no_grad():
        for name, p in ref.named_parameters():
            if "norm" in name:
                p.add_(torch.randn_like(p) * 0.2)
    load_encoder_weights(ours, _lightning(ref))  # the Lightning path maps every key back
    acq = NAIP[3][:1]
    metadata = _our_metadata("naip", ["red", "green", "blue"], 0.6, acq)
    time, latlon = _clay_time_latlon(acq, "lon_first")
    x = torch.randn(1, 3, 16, 16)
    outs, final = _run_ref(ref, x, time, latlon, 0.6, metadata["wavelengths"])
    layers = [0, ours.depth // 2, ours.depth - 1]
    with torch.no_grad():
        feats = ours.forward_features(x, layers=layers, norm=True, metadata=metadata)
        for f, i in zip(feats, layers):
            assert rel_err(f, _as_map(ref.transformer.norm(outs[i]), 2, 2)) <= 1e-4, i
    assert rel_err(feats[-1], _as_map(final, 2, 2)) <= 1e-4


def test_checkpoint_formats(upstream, tmp_path):
    """Lightning .ckpt, a bare upstream encoder as safetensors, and d2geo's own keys under
    a detectron2 prefix all give the same encoder; the decoder and teacher are dropped."""
    ref = _ref_encoder(upstream)
    x = torch.randn(1, 4, 32, 32)
    md = _our_metadata("naip", NAIP_BANDS, 0.6, NAIP[3][:1])
    lightning = tmp_path / "clay.ckpt"
    torch.save(_lightning(ref, upstream), lightning)
    bare = tmp_path / "encoder.safetensors"
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, bare)
    first = build_encoder("clay_v1_base", weights=lightning, **TINY).eval()
    own = tmp_path / "d2.pth"
    torch.save({"model": {f"backbone.net.encoder.{k}": v for k, v in first.state_dict().items()},
                "iteration": 10}, own)
    with torch.no_grad():
        expected = first.forward_features(x, layers=[0, 2], metadata=md)
        for path in (bare, own):
            enc = build_encoder("clay_v1_base", weights=path, **TINY).eval()
            for a, b in zip(enc.forward_features(x, layers=[0, 2], metadata=md), expected):
                assert torch.equal(a, b), path.name
    sd = first.checkpoint_filter_fn(_lightning(ref, upstream)["state_dict"])
    assert set(sd) == set(first.state_dict())


def test_checkpoints_of_other_models_are_rejected(upstream, tmp_path):
    dino = build_encoder("dinov2_vits14", embed_dim=32, depth=2, num_heads=2)
    path = tmp_path / "dino.pth"
    torch.save(dino.state_dict(), path)
    with pytest.raises(CheckpointError, match="not a Clay checkpoint"):
        build_encoder("clay_v1_base", weights=path, **TINY)
    wider = _ref_encoder(upstream, dim=96, dim_head=24)
    with pytest.raises(CheckpointError, match="shapes differ"):
        build_encoder("clay_v1_base", weights=_lightning(wider), **TINY)


def _tiny(**kw):
    return build_encoder("clay_v1_base", **{**TINY, "depth": 1, **kw}).eval()


@pytest.mark.parametrize("shape,change,match", [
    ((1, 4, 32, 32), {"wavelengths": None}, "band_wavelengths"),
    ((1, 4, 32, 32), {"wavelengths": [0.65, 0.56, 0.48]}, "3 wavelengths but the input has 4 bands"),
    ((2, 4, 32, 32), {"wavelengths": [[0.65, 0.56, 0.48, 0.842]] * 2}, "batch one sensor at a time"),
    ((1, 4, 32, 32), {"wavelengths": [650.0, 560.0, 480.0, 842.0]}, "nanometres"),
    ((1, 4, 32, 32), {"timestamps": [[1.6e9, 1.7e9]]}, "single acquisitions"),
    ((1, 4, 32, 32), {"gsd": None}, "ground sample distance"),
    ((1, 4, 36, 32), {}, "multiple of the patch size 8"),
    ((1, 4, 2, 32, 32), {}, "single-frame"),
])
def test_bad_input_is_explained(shape, change, match):
    md = {"wavelengths": [0.65, 0.56, 0.48, 0.842], "gsd": [0.6] * shape[0],
          "timestamps": [[1.6e9]] * shape[0], "latlon": [[40.0, -75.0]] * shape[0]}
    md.update(change)
    md = {k: v for k, v in md.items() if v is not None}
    with pytest.raises(EncoderInputError, match=match):
        _tiny().forward_features(torch.randn(*shape), metadata=md)


def test_constructor_defaults_and_unknown_metadata(caplog):
    """sensor/bands and gsd given at build time stand in for metadata; missing time and
    location become Clay's zeros with a one-time warning."""
    explicit = _tiny()
    defaults = _tiny(sensor="naip", bands=NAIP_BANDS, gsd=0.6)
    defaults.load_state_dict(explicit.state_dict())
    assert defaults.in_chans == 4 and explicit.in_chans == 0
    x = torch.randn(1, 4, 16, 16)
    md = {"timestamps": [[1.6e9]], "latlon": [[40.0, -75.0]]}
    with torch.no_grad():
        a = explicit(x, metadata={**md, "wavelengths": band_wavelengths("naip", NAIP_BANDS),
                                  "gsd": [0.6]})
        b = defaults(x, metadata=md)
    assert torch.equal(a, b)
    for key in ("timestamps", "latlon"):
        metadata_module._WARNED.discard(("ClayEncoder", key))
    with caplog.at_level(logging.WARNING):
        _, _, values = defaults.encode_metadata({}, batch_size=2, num_bands=4)
        defaults.encode_metadata({}, batch_size=2, num_bands=4)
    assert torch.equal(values, torch.zeros(2, 8))
    warnings = [r for r in caplog.records if "ClayEncoder" in r.getMessage()]
    assert len(warnings) == 2 and "'timestamps'" in warnings[0].getMessage()


def test_time_and_location_codes():
    # 2020-10-22 10:00:51 UTC is in ISO week 43; 2021-01-01 is in ISO week 53 (of 2020)
    seconds = torch.tensor([datetime(2020, 10, 22, 10, 0, 51, tzinfo=timezone.utc).timestamp(),
                            datetime(2021, 1, 1, 23, 59, tzinfo=timezone.utc).timestamp()],
                           dtype=torch.float64)
    w, h = 2 * math.pi / 52, 2 * math.pi / 24
    expected = torch.tensor([[math.sin(43 * w), math.cos(43 * w), math.sin(10 * h), math.cos(10 * h)],
                             [math.sin(53 * w), math.cos(53 * w), math.sin(23 * h), math.cos(23 * h)]])
    torch.testing.assert_close(clay_time_code(seconds), expected)
    ll = torch.tensor([[30.0, -90.0]])
    r = 0.5 * math.sqrt(3)
    torch.testing.assert_close(clay_latlon_code(ll, "lat_first"), torch.tensor([[0.5, r, -1.0, 0.0]]))
    torch.testing.assert_close(clay_latlon_code(ll, "lon_first"), torch.tensor([[-1.0, 0.0, 0.5, r]]))


def test_other_patch_size_resamples_the_generated_kernel():
    """patch_size=16 resamples the 8x8 kernels (FlexiViT pinv): a patch upsampled 8 -> 16
    embeds as the original did at patch 8; gradients reach the kernel generator."""
    p8 = _tiny()
    p16 = _tiny(patch_size=16)
    p16.load_state_dict(p8.state_dict())
    x = torch.randn(2, 4, 8, 8)
    x16 = F.interpolate(x, size=(16, 16), mode="bicubic", antialias=True, align_corners=False)
    md = {"wavelengths": [0.65, 0.56, 0.48, 0.842], "gsd": [0.6, 0.6]}
    with torch.no_grad():
        a = p8(x, metadata=md)
        b = p16(x16, metadata=md)
    assert a.shape == b.shape == (2, 64, 1, 1)
    assert rel_err(b, a) <= 1e-4
    p16.train()
    p16(torch.randn(1, 4, 32, 48), metadata={**md, "gsd": [0.6]}).square().mean().backward()
    grad = p16.patch_embed.generator.to_weight.weight.grad
    assert grad is not None and grad.abs().sum() > 0
    with pytest.raises(EncoderInputError, match="multiple of the patch size 16"):
        p16(torch.randn(1, 4, 24, 32), metadata=md)


def test_position_tables_are_cached():
    enc = _tiny()
    md = {"wavelengths": [0.65, 0.56, 0.48, 0.842], "gsd": [0.6]}
    with torch.no_grad():
        enc(torch.randn(1, 4, 32, 32), metadata=md)
        table = enc._position_table(4, 4, torch.tensor(0.6).item(), torch.device("cpu"))
        enc(torch.randn(1, 4, 32, 32), metadata=md)
    assert enc._position_table(4, 4, torch.tensor(0.6).item(), torch.device("cpu")) is table
    assert len(enc._table_cache) == 1
