"""Galileo's SRTM space group (elevation, slope) against the publisher's ``single_file_galileo.py``.

The stored fixture (tests/fixtures/make_galileo_fixture.py, which ran the upstream ``Encoder``
once) has three cases with the SRTM group present: Sentinel-2 + Sentinel-1 + SRTM at the
pretraining samples' 96 px (2 dates), SRTM + Sentinel-2 on a non-square grid (3 dates, run
upstream on a square canvas with the outside patches masked), and RGB + SRTM on one date at a
4 px patch resampled from the 8 px kernels. The cases without SRTM are in test_galileo.py.
"""
import logging
import os
import sys

import numpy as np
import pytest
import torch

from d2geo.encoders import BandError, CheckpointError, EncoderInputError, build_encoder, load_encoder_weights
from d2geo.encoders import galileo as galileo_mod
from d2geo.encoders.galileo_srtm import GALILEO_ELEVATION_STATS, GALILEO_SLOPE_STATS, galileo_slope

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(HERE, "fixtures"))
import make_galileo_fixture as fixture  # noqa: E402

DATA = os.path.join(HERE, "fixtures", "galileo_official_tiny.pt")
TINY = dict(embed_dim=16, depth=3, num_heads=4)
TOL = 1e-4
SRTM_CASES = [i for i, c in enumerate(fixture.CASES) if any(b in fixture.SRTM_CHANNELS for b in c[1])]


@pytest.fixture(scope="module")
def official():
    return torch.load(DATA, map_location="cpu", weights_only=True)


def _metadata(case, batch):
    from datetime import datetime, timezone

    stamps = torch.tensor([[datetime(2022, int(m) + 1, 15, tzinfo=timezone.utc).timestamp() for m in row]
                           for row in case["months"].tolist()], dtype=torch.float64)
    return {"timestamps": stamps, "gsd": torch.full((batch,), case["gsd"])}


def _encoder(official, bands, *, patch_size=8, num_frames=1, **kw):
    return build_encoder("galileo_nano", weights=dict(official["state_dict"]), patch_size=patch_size, bands=bands,
                         num_frames=num_frames, **TINY, **kw).eval()


def _slope_channel(elev_norm: torch.Tensor, gsd: float) -> torch.Tensor:
    """The normalized slope of a normalized elevation ``(B, T, H, W)``, computed independently
    of d2geo with numpy's gradient (central differences inside, one-sided on the border)."""
    metres = elev_norm.double().numpy() * GALILEO_ELEVATION_STATS.std[0]
    dy, dx = np.gradient(metres, gsd, axis=(-2, -1))
    deg = np.degrees(np.arctan(np.hypot(dx, dy)))
    return torch.from_numpy((deg - GALILEO_SLOPE_STATS.mean[0]) / GALILEO_SLOPE_STATS.std[0]).float()


def test_fixture_has_srtm_cases():
    assert len(SRTM_CASES) == 3


@pytest.mark.parametrize("index", SRTM_CASES, ids=[fixture.CASES[i][0] for i in SRTM_CASES])
def test_srtm_matches_upstream_galileo(official, index):
    case = official["cases"][index]
    assert case["name"] == fixture.CASES[index][0]
    x = fixture.formula_input(index)
    enc = _encoder(official, case["bands"], patch_size=case["patch_size"], num_frames=x.shape[2])
    assert enc.space_groups == ["SRTM"] and not enc.derives_slope
    with torch.no_grad():
        maps = enc.forward_features(x, layers=[0, 1, 2], metadata=_metadata(case, x.shape[0]))
    for layer, (ours, ref) in enumerate(zip(maps, case["layer_maps"])):
        assert ours.shape == ref.shape
        assert (ours - ref).abs().max() < TOL, f"block {layer}"
    # the mean over the dates (temporal_fold='mean') is upstream's per-patch average of ALL tokens,
    # space-time and SRTM, taken from upstream's own apply_mask_and_average_tokens_per_patch
    assert (maps[-1].mean(dim=2) - case["pooled"]).abs().max() < TOL


def test_srtm_present_changes_the_features_and_absent_is_the_old_encoder(official):
    index = SRTM_CASES[0]
    case = official["cases"][index]
    x = fixture.formula_input(index)
    keep = [i for i, b in enumerate(case["bands"]) if not b.startswith("SRTM")]
    md = _metadata(case, 1)
    with torch.no_grad():
        with_srtm = _encoder(official, case["bands"], num_frames=2)(x, metadata=md)
        without = _encoder(official, [case["bands"][i] for i in keep], num_frames=2)(x[:, keep], metadata=md)
    assert (with_srtm - without).abs().max() > 1e-2
    # the encoder without SRTM is what it was: no space tokens, no space parameters
    assert not hasattr(_encoder(official, [case["bands"][i] for i in keep]), "space_embed")


def test_published_layout_loads_the_srtm_kernel_and_names_what_it_leaves_out(official):
    bands = list(galileo_mod.GALILEO_BANDS) + ["DEM:DEM", "slope"]
    enc = build_encoder("galileo_nano", bands=bands, **TINY)
    sd = {"model.encoder." + k.replace("blocks.", "blocks.backbone.", 1): v for k, v in official["state_dict"].items()}
    report = load_encoder_weights(enc, sd)
    assert {"space_embed.SRTM.proj.weight", "space_embed.SRTM.proj.bias", "sp_channel_embed"} <= set(report.loaded)
    assert torch.equal(enc.sp_channel_embed, official["state_dict"]["sp_channel_embed"][:1])
    assert torch.equal(enc.space_embed.SRTM.proj.weight, official["state_dict"]["space_embed.SRTM.proj.weight"])
    ignored = report.ignored
    for left_out in ("space_embed.DW.proj.weight", "space_embed.WC.proj.weight", "sp_channel_embed[1:]",
                     "static_embed.LS.weight", "time_embed.ERA5.weight", "space_time_embed.NDVI.proj.weight"):
        assert any(k.endswith(left_out) for k in ignored), left_out
    assert not any("space_embed.SRTM" in k for k in ignored)


def test_real_nano_key_layout_loads_strictly_with_srtm(official):
    """Every tensor of the published nano encoder.pt (names and shapes) is loaded or named, the SRTM ones loaded."""
    enc = build_encoder("galileo_nano", bands=list(galileo_mod.GALILEO_BANDS) + ["NDVI", "elevation", "slope"])
    sd = {k: torch.zeros(shape) for k, shape in official["nano_keys"]}
    report = load_encoder_weights(enc, sd)
    assert set(report.loaded) | set(report.ignored) >= {k for k in sd if not k.startswith("blocks.")}
    assert len(report.loaded) == len(enc.state_dict())
    assert "space_embed.SRTM.proj.weight" in report.loaded


def test_bad_sp_channel_embed_is_refused(official):
    sd = dict(official["state_dict"], sp_channel_embed=torch.zeros(5, 4))
    with pytest.raises(CheckpointError, match="sp_channel_embed has shape"):
        build_encoder("galileo_nano", weights=sd, bands=["S2:B02", "S2:B03", "S2:B04", "DEM"], **TINY)


def test_d2geo_checkpoint_round_trip_with_srtm(official, tmp_path):
    index = SRTM_CASES[1]
    case = official["cases"][index]
    enc = _encoder(official, case["bands"], num_frames=3)
    path = tmp_path / "ours.pt"
    torch.save(enc.state_dict(), path)
    again = build_encoder("galileo_nano", weights=str(path), bands=case["bands"], num_frames=3, **TINY).eval()
    x, md = fixture.formula_input(index), _metadata(case, 2)
    with torch.no_grad():
        assert torch.equal(enc(x, metadata=md), again(x, metadata=md))


def test_derived_slope_of_a_plane_is_its_inclination():
    gsd = torch.tensor([10.0, 30.0])
    rows, cols = torch.meshgrid(torch.arange(7.0), torch.arange(9.0), indexing="ij")
    # rises 0.3 m per metre east and 0.4 m per metre south: tan(slope) = 0.5 everywhere, borders included
    z = torch.stack([(0.3 * cols + 0.4 * rows) * g for g in gsd])
    slope = galileo_slope(z, gsd)
    assert torch.allclose(slope, torch.full_like(slope, float(np.degrees(np.arctan(0.5)))), atol=1e-4)
    # the same heights at a coarser pixel are a gentler slope
    assert galileo_slope(z[:1], torch.tensor([20.0])).max() < slope[0].min() - 5


def test_derived_slope_equals_the_slope_given_as_a_channel(official):
    """Elevation only: the encoder derives the slope as Galileo's pipeline defines it (4-neighbour
    gradient over the GSD, ee.Terrain.slope); the same as giving that slope as a channel."""
    index = SRTM_CASES[1]
    case = official["cases"][index]
    x = fixture.formula_input(index)
    bands = case["bands"]
    e, s = bands.index("SRTM:elevation"), bands.index("SRTM:slope")
    x[:, e] = x[:, e] * 0.05 + torch.linspace(0, 0.3, x.shape[-1])  # a valley side: slopes of a few degrees
    x[:, s] = _slope_channel(x[:, e], case["gsd"])
    keep = [i for i in range(len(bands)) if i != s]
    md = _metadata(case, 2)
    given = _encoder(official, bands, num_frames=3)
    derived = _encoder(official, [bands[i] for i in keep], num_frames=3)
    assert derived.derives_slope
    with torch.no_grad():
        a = given(x, metadata=md)
        b = derived(x[:, keep], metadata=md)
        other_gsd = derived(x[:, keep], metadata={**md, "gsd": md["gsd"] * 4})
    assert (a - b).abs().max() < 1e-5
    assert (b - other_gsd).abs().max() > 1e-3  # the slope follows the GSD


def test_derived_slope_without_gsd_warns_and_uses_10m(official, caplog, monkeypatch):
    from d2geo.encoders import metadata as metadata_mod

    monkeypatch.setattr(metadata_mod, "_WARNED", set())
    enc = _encoder(official, ["S2:B02", "S2:B03", "S2:B04", "DEM"], default_month=0)
    x = torch.randn(1, 4, 16, 16)
    with torch.no_grad(), caplog.at_level(logging.WARNING):
        out = enc(x)
        ref = enc(x, metadata={"gsd": torch.tensor([10.0])})
    assert "derive the slope" in caplog.text
    assert torch.equal(out, ref)


def test_bad_srtm_inputs_are_refused(official):
    rgb = ["S2:B02", "S2:B03", "S2:B04"]
    with pytest.raises(BandError, match="'slope' channel without the elevation"):
        build_encoder("galileo_nano", bands=rgb + ["slope"], **TINY)
    with pytest.raises(BandError, match="two channels are Galileo's SRTM elevation"):
        build_encoder("galileo_nano", bands=rgb + ["DEM", "SRTM:elevation"], **TINY)
    with pytest.raises(BandError, match="SRTM group has the bands elevation.*and slope"):
        build_encoder("galileo_nano", bands=rgb + ["DEM:aspect"], **TINY)
    with pytest.raises(BandError, match="not alone"):
        build_encoder("galileo_nano", bands=["DEM"], **TINY)
    with pytest.raises(BandError, match="Dynamic World.*does not take"):
        build_encoder("galileo_nano", bands=rgb + ["DEM", "dynamic_world"], **TINY)
    enc = _encoder(official, rgb + ["DEM"], num_frames=2, default_month=0)
    x = torch.randn(1, 4, 2, 16, 16)
    x[:, 3, 1] = x[:, 3, 0] + 0.01
    with pytest.raises(EncoderInputError, match=r"SRTM channels \('DEM'\) differ between the dates.*same DEM"):
        enc(x, metadata={"gsd": torch.tensor([10.0])})
    with pytest.raises(BandError, match="at least 2 x 2 pixels"):
        _encoder(official, rgb + ["DEM"], patch_size=1, default_month=0)(torch.randn(1, 4, 1, 1))


def test_galileo_stats_cover_every_channel():
    bands = ["S2L2A:B04", "DEM:DEM", "S1:VV", "NDVI", "slope", "S2L2A:B03", "S2L2A:B02", "S1:VH"]
    mean, std = galileo_mod.galileo_stats(bands)
    assert len(mean) == len(std) == len(bands)
    # config/normalization.json "16", elevation and slope, in Galileo's (x - mean + 2 std) / (4 std)
    assert mean[1] == pytest.approx(673.0152819503361 - 2 * 983.0697298296237)
    assert std[1] == pytest.approx(4 * 983.0697298296237)
    assert std[4] == pytest.approx(4 * 8.167406789813247)
    assert (mean[3], std[3]) == (0.0, 1.0)  # upstream leaves NDVI as it is
    assert mean[0] == galileo_mod.GALILEO_S2_STATS.mean[2] and mean[6] == galileo_mod.GALILEO_S2_STATS.mean[0]
    assert mean[2] == galileo_mod.GALILEO_S1_STATS.mean[0] and std[7] == galileo_mod.GALILEO_S1_STATS.std[1]


def test_exported_with_a_derived_slope_follows_the_size(official):
    from helpers import rel_err

    enc = _encoder(official, ["S2:B02", "S2:B03", "S2:B04", "DEM"], num_frames=2, default_month=3)
    x = torch.randn(1, 4, 2, 32, 48)
    x[:, 3, 1] = x[:, 3, 0]
    dim = torch.export.Dim
    h, w = dim("h8", min=2, max=32) * 8, dim("w8", min=2, max=32) * 8
    ep = torch.export.export(enc, (x,), dynamic_shapes=({3: h, 4: w},))
    y = torch.randn(1, 4, 2, 64, 40)
    y[:, 3, 1] = y[:, 3, 0]
    with torch.no_grad():
        for z in (x, y):
            assert rel_err(ep.module()(z), enc(z)) <= 1e-5


def _real_sample(terramind_examples, name, window):
    pytest.importorskip("detectron2", reason="d2geo.data needs detectron2: see README for installing it from source")
    from d2geo.data.geotiff import read_modalities

    files = {m: os.path.join(terramind_examples, m, name) for m in ("S2L2A", "DEM")}
    bands = [f"S2L2A:{b}" for b in ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")] + ["DEM"]
    return read_modalities(files, bands=bands, window=window)


def test_real_s2l2a_and_dem_tiles_through_read_modalities(terramind_examples, official):
    from rasterio.windows import Window

    names = sorted(os.listdir(os.path.join(terramind_examples, "DEM")))
    sample = _real_sample(terramind_examples, names[0], Window(0, 0, 48, 32))
    other = _real_sample(terramind_examples, names[1], Window(0, 0, 48, 32))
    assert sample.band_names[-1] == "DEM:DEM"
    mean, std = galileo_mod.galileo_stats(sample.band_names)
    norm = lambda s: ((torch.as_tensor(s.image, dtype=torch.float32) - torch.tensor(mean)[:, None, None])  # noqa: E731
                      / torch.tensor(std)[:, None, None])[None]
    x, x_other = norm(sample), norm(other)
    enc = _encoder(official, sample.band_names, patch_size=4, default_month=6)
    assert enc.derives_slope
    md = {"gsd": torch.tensor([float(sample.metadata["gsd"])])} if "gsd" in sample.metadata else {}
    with torch.no_grad():
        out = enc(x, metadata=md)
        other_dem = x.clone()
        other_dem[:, -1] = x_other[:, -1]  # the same optical image over another place's terrain
        out_other_dem = enc(other_dem, metadata=md)
        no_dem = _encoder(official, sample.band_names[:-1], patch_size=4, default_month=6)(x[:, :-1], metadata=md)
    assert tuple(out.shape) == (1, 16, 1, 8, 12) and torch.isfinite(out).all()
    assert (out - out_other_dem).abs().max() > 1e-3 and (out - no_dem).abs().max() > 1e-3


def test_units_check_refuses_a_dem_in_km_or_already_normalized(terramind_examples):
    """The real tiles' DEM in metres passes Galileo's statistics; the same DEM in kilometres or
    already divided by upstream's 2000 m (its other normalizer) is refused, naming the band."""
    from rasterio.windows import Window

    from d2geo.data.units import UnitsError, check_units

    names = sorted(os.listdir(os.path.join(terramind_examples, "DEM")))
    for name in names:
        sample = _real_sample(terramind_examples, name, Window(0, 0, 224, 224))
        mean, std = galileo_mod.galileo_stats(sample.band_names)
        report = check_units(sample.image.astype(np.float64), band_names=sample.band_names, mean=mean, std=std,
                             source=name)
        assert report.ok and "DEM:DEM" in report.judged
    for scale, what in ((1e-3, "km"), (1 / 2000, "divided by 2000")):
        sample = _real_sample(terramind_examples, names[1], Window(0, 0, 224, 224))  # 1192..1218 m
        wrong = sample.image[-1:].astype(np.float64) * scale
        with pytest.raises(UnitsError, match="DEM:DEM"):
            check_units(wrong, band_names=["DEM:DEM"], mean=mean[-1:], std=std[-1:], source=what)


def test_live_published_nano_with_real_dem_matches_upstream(terramind_examples):
    """With ``$D2GEO_GALILEO_SRC`` (a checkout of nasaharvest/galileo): the published nano
    weights on a real S2L2A + DEM tile, ours against upstream's ``Encoder`` (SRTM present, the
    slope ours derives fed to upstream), the per-patch average of all tokens."""
    from rasterio.windows import Window

    from helpers.upstream import or_skip
    from testkit.upstream import GALILEO_SRC_ENV, galileo_single_file

    mod = or_skip(galileo_single_file)
    root = os.environ[GALILEO_SRC_ENV]
    weights = os.path.join(root, "data", "models", "nano", "encoder.pt")
    if not os.path.isfile(weights):
        pytest.skip(f"no published nano weights at {weights}")
    name = sorted(os.listdir(os.path.join(terramind_examples, "DEM")))[2]  # 433D: 100..249 m, hills
    sample = _real_sample(terramind_examples, name, Window(0, 0, 64, 64))
    mean, std = galileo_mod.galileo_stats(sample.band_names)
    x = ((torch.as_tensor(sample.image, dtype=torch.float32) - torch.tensor(mean)[:, None, None])
         / torch.tensor(std)[:, None, None])[None, :, None]  # (1, 11, 1, 64, 64)
    sd = torch.load(weights, map_location="cpu", weights_only=True)
    up = mod.Encoder(**{k: v for k, v in zip(("embedding_size", "depth", "num_heads"), (128, 4, 8))},
                     mlp_ratio=4, max_sequence_length=24, max_patch_size=8).eval()
    up.load_state_dict({k.replace(".backbone", ""): v for k, v in sd.items()})
    slope = _slope_channel(x[:, -1, 0], 10.0)[0]  # (64, 64), normalized
    s_t = torch.zeros(1, 64, 64, 1, 13)
    s_t[..., 2:12] = x[0, :10, 0].permute(1, 2, 0)[None, :, :, None]  # B02..B12 in upstream's order
    s_t_m = torch.ones(1, 64, 64, 1, 7)
    s_t_m[..., 1:6] = 0  # the five S2 groups
    sp = torch.zeros(1, 64, 64, 16)
    sp[..., 0], sp[..., 1] = x[0, 10, 0][None], slope[None]
    sp_m = torch.ones(1, 64, 64, 3)
    sp_m[..., 0] = 0
    for p in (8, 4):
        enc = build_encoder("galileo_nano", weights=weights, bands=sample.band_names, patch_size=p,
                            default_month=6).eval()
        with torch.no_grad():
            out = up(s_t, sp, torch.zeros(1, 1, 6), torch.zeros(1, 18), s_t_m, sp_m, torch.ones(1, 1, 3),
                     torch.ones(1, 4), torch.tensor([[6]]), patch_size=p, input_resolution_m=10)
            ref = mod.Encoder.apply_mask_and_average_tokens_per_patch(*out[:8])  # (1, h*w, D)
            ours = enc(x, metadata={"gsd": torch.tensor([10.0])}).mean(dim=2)  # temporal_fold='mean'
        ref = ref.reshape(1, 64 // p, 64 // p, -1).permute(0, 3, 1, 2)
        assert (ours - ref).abs().max() < TOL, p


def test_backbone_mean_fold_is_upstreams_average_and_trains_the_srtm_kernel(official):
    """Through the detectron2 backbone: ``temporal_fold='mean'`` gives upstream's per-patch average
    of all tokens (SRTM included), and a backward pass reaches the SRTM kernel and group embedding."""
    pytest.importorskip("detectron2")
    from d2geo.modeling import GeoBackbone

    index = SRTM_CASES[1]  # 3 dates, non-square, 20 m
    case = official["cases"][index]
    x = fixture.formula_input(index)
    enc = _encoder(official, case["bands"], num_frames=3)
    net = GeoBackbone(enc, layers=(2,), temporal_fold="mean")
    with net.use_metadata(_metadata(case, 2)):
        with torch.no_grad():
            out = net(x)["layer2"]
        assert (out - case["pooled"]).abs().max() < TOL
        net.train()
        net(x)["layer2"].square().mean().backward()
    for name in ("space_embed.SRTM.proj.weight", "sp_channel_embed"):
        grad = enc.get_parameter(name).grad
        assert grad is not None and grad.abs().max() > 0, name
    assert "sp_channel_embed" in enc.no_weight_decay()
