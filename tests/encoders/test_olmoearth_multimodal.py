"""OlmoEarth with several modalities in one encoder (Sentinel-2 L2A + Sentinel-1), against the
publishers' code: ``tests/fixtures/make_olmoearth_fixture.py`` ran the tiny upstream encoder on both
modalities in one forward pass (their tokens in one sequence) and stored blocks 0..2 and the final
tokens pooled by upstream's own ``pool_spatially`` (``multi_runs``: 32 x 32 at the native patch 8, and
32 x 16 at patch 4 with gsd 20 m). With ``OLMOEARTH_REPO`` set to a checkout, it also runs live.
"""
import datetime
import os
import sys

import pytest
import torch

from d2geo.encoders import BandError, CheckpointError, EncoderInputError, build_encoder
from d2geo.encoders.olmoearth import OLMOEARTH_S2_STATS, olmoearth_stats

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(HERE, "fixtures", "olmoearth_official_tiny.pt")
TOL = 1e-5  # max absolute difference (the bar is 1e-4)
S2 = ["B02", "B03", "B04", "B08", "B05", "B06", "B07", "B8A", "B11", "B12", "B01", "B09"]  # upstream's group order
CHANNELS = [f"S2L2A:{b}" for b in S2] + ["S1RTC:VV", "S1RTC:VH"]  # the fixture's x: S2 then S1


@pytest.fixture(scope="module")
def official():
    return torch.load(DATA, weights_only=True)


def _metadata(months, gsd):
    ts = [[datetime.datetime(2021, int(m) + 1, 15, tzinfo=datetime.timezone.utc).timestamp()] for m in months]
    return dict(timestamps=torch.tensor(ts, dtype=torch.float64), gsd=torch.full((len(months),), float(gsd)))


def _weights(ref):  # the published file holds the whole LatentMIM model: wrap like it
    return {f"encoder.{k}": v.float() for k, v in ref["state_dict"].items()}


FILE_ORDER = [CHANNELS.index(f"S2L2A:{b}") for b in ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A",
                                                       "B09", "B11", "B12")]  # as read_modalities stacks an S2L2A file


def _check_against(ref, order=(0, 1), s2=tuple(range(12)), s1=(12, 13)):
    """``order``: which modality's channels come first in our input (upstream's result does not depend on it);
    ``s2``, ``s1``: the fixture's channels of each modality in the order our input has them."""
    sd = _weights(ref)
    for name, run in ref["multi_runs"].items():
        x = run["x"].float()
        idx = [list(s2), list(s1)]
        perm = [i for o in order for i in idx[o]]
        enc = build_encoder("olmoearth_v1_nano", weights=sd, bands=[CHANNELS[i] for i in perm],
                            patch_size=run["patch_size"], **ref["config"]).eval()
        assert enc.modalities == tuple(run["modalities"][o] for o in order)
        md = _metadata(run["months"].reshape(-1).tolist(), run["gsd"])
        with torch.no_grad():
            raw = enc.forward_features(x[:, perm], layers=[0, 1, 2], norm=False, metadata=md)
            final = enc.forward_features(x[:, perm], layers=[-1], norm=True, metadata=md)[0]
        h, w = x.shape[-2] // run["patch_size"], x.shape[-1] // run["patch_size"]
        for i, (ours, up) in enumerate(zip(raw, run["blocks"])):
            assert ours.shape == (x.shape[0], ref["config"]["embed_dim"], h, w)
            assert (ours - up.permute(0, 3, 1, 2)).abs().max() <= TOL, (name, i)
        assert (final - run["final"].permute(0, 3, 1, 2)).abs().max() <= TOL, name


def test_two_modalities_match_upstream_fixture(official):
    assert official["multi_runs"]["s2s1_nonsquare"]["x"].shape[-2:] == (32, 16)
    _check_against(official)


def test_modality_order_of_the_channels_does_not_matter(official):
    _check_against(official, order=(1, 0))


def test_channels_in_file_order_map_to_upstreams_band_groups(official):
    _check_against(official, s2=FILE_ORDER, s1=(13, 12))  # S2L2A as stored (B01 .. B12), then VH, VV


def test_window_attention_over_all_modalities_tokens(official):
    enc = build_encoder("olmoearth_v1_nano", weights=_weights(official), bands=["S2L2A", "S1RTC"],
                        **official["config"]).eval()
    x, md = torch.randn(1, 14, 6 * 8, 5 * 8), _metadata([3], 10)
    with torch.no_grad():
        ref = enc.forward_features(x, layers=[0, 1, 2], metadata=md)
        assert enc._embed(x, md)[1] == (4, 6, 5)  # 3 Sentinel-2 groups and 1 Sentinel-1 group per position
        enc.set_window_attention(50)  # one window: exactly global attention
        assert all(torch.equal(a, b) for a, b in zip(enc.forward_features(x, layers=[0, 1, 2], metadata=md), ref))
        enc.set_window_attention(3)
        out = enc.forward_features(x, layers=[2], metadata=md)[0]
    assert out.shape == ref[2].shape and not torch.allclose(out, ref[2])


@pytest.mark.skipif(not os.environ.get("OLMOEARTH_REPO"), reason="set OLMOEARTH_REPO to an olmoearth_pretrain checkout")
def test_two_modalities_match_upstream_live():
    sys.path.insert(0, os.path.join(HERE, "fixtures"))
    from make_olmoearth_fixture import reference

    _check_against(reference(os.environ["OLMOEARTH_REPO"], seed=3))


def test_second_modality_changes_the_first_ones_features(official):
    """One attention: the Sentinel-2 tokens see the Sentinel-1 ones (not two encoders side by side)."""
    sd = _weights(official)
    enc = build_encoder("olmoearth_v1_nano", weights=sd, bands=["S2L2A", "S1RTC"], **official["config"]).eval()
    assert enc.bands[0] == "S2L2A:B01" and enc.in_chans == 14 and enc.used_groups == [0, 1, 2, 3]
    x = torch.randn(1, 14, 16, 16)
    md = _metadata([3], 10)
    with torch.no_grad():
        tokens, grid, _ = enc._embed(x, md)
        out = enc.get_blocks()[0](tokens)
        x2 = x.clone()
        x2[:, 12:] += 1.0  # Sentinel-1 only
        out2 = enc.get_blocks()[0](enc._embed(x2, md)[0])
    assert grid == (4, 2, 2)
    s2 = slice(0, 3 * 4)
    assert not torch.allclose(out[:, s2], out2[:, s2])


def test_refuses_ambiguous_or_mixed_channels(official):
    cfg = official["config"]
    with pytest.raises(BandError, match="S1GRD and S1RTC both feed OlmoEarth's sentinel1"):
        build_encoder("olmoearth_v1_nano", bands=["S1GRD:VV", "S1RTC:VH"], **cfg)
    with pytest.raises(BandError, match="channel 'B04'.*'<MODALITY>:<band>'"):
        build_encoder("olmoearth_v1_nano", bands=["B04", "S1RTC:VV"], **cfg)
    with pytest.raises(BandError, match="channel 'DEM:DEM'"):
        build_encoder("olmoearth_v1_nano", bands=["S2L2A", "DEM:DEM"], **cfg)
    with pytest.raises(BandError, match="given twice"):
        build_encoder("olmoearth_v1_nano", bands=["S2L2A:B04", "S2L2A:red"], **cfg)
    with pytest.raises(ValueError, match="leave sensor unset"):
        build_encoder("olmoearth_v1_nano", bands=["S2L2A", "S1RTC"], sensor="hls", **cfg)
    with pytest.raises(ValueError, match="modality='landsat' but the channels"):
        build_encoder("olmoearth_v1_nano", bands=["S2L2A", "S1RTC"], modality="landsat", **cfg)
    with pytest.raises(ValueError, match="several modalities need channels named"):
        build_encoder("olmoearth_v1_nano", modality=["sentinel2_l2a", "sentinel1"], **cfg)


def test_refuses_checkpoint_without_the_second_modality(official):
    sd = {k: v for k, v in _weights(official).items() if "sentinel1" not in k}
    with pytest.raises(CheckpointError, match="not trained with sentinel1"):
        build_encoder("olmoearth_v1_nano", weights=sd, bands=["S2L2A", "S1RTC"], **official["config"])


def test_refuses_mismatched_sizes(official):
    enc = build_encoder("olmoearth_v1_nano", bands=["S2L2A", "S1RTC"], **official["config"])
    md = _metadata([3], 10)
    with pytest.raises(EncoderInputError, match="13 bands but the encoder expects 14"):
        enc(torch.randn(1, 13, 16, 16), metadata=md)  # one band of one modality missing
    with pytest.raises(EncoderInputError, match="multiple"):
        enc(torch.randn(1, 14, 16, 12), metadata=md)  # not whole 8-pixel patches


def test_stats_per_modality_and_missing_ones_refused():
    mean, std = olmoearth_stats(["S1RTC:VH", "S2L2A:B04"])
    # upstream's Normalizer (computed.json, std_multiplier 2): (x - (mean - 2 std)) / (4 std)
    vh_mean, vh_std = -17.745436133270044, 10.216274681392647
    x = torch.tensor([-30.0, -10.0])
    torch.testing.assert_close((x - mean[0]) / std[0], (x - (vh_mean - 2 * vh_std)) / (4 * vh_std))
    b04_mean, b04_std = 1513.0573882432757, 1740.7757298757895  # computed.json, Sentinel-2 L2A DN
    assert (mean[1], std[1]) == pytest.approx((b04_mean - 2 * b04_std, 4 * b04_std))
    with pytest.raises(KeyError, match="no statistics for OlmoEarth's sentinel1.*S1RTC:VV.*pixel_mean"):
        olmoearth_stats(["S2L2A", "S1RTC"], stats=(OLMOEARTH_S2_STATS,))


def test_real_s2_s1_tiles_through_read_modalities(terramind_examples, official):
    pytest.importorskip("detectron2", reason="d2geo.data needs detectron2: see README for installing it from source")
    from rasterio.windows import Window

    from d2geo.data.geotiff import read_modalities

    name = sorted(os.listdir(os.path.join(terramind_examples, "S2L2A")))[0]
    files = {m: os.path.join(terramind_examples, m, name) for m in ("S2L2A", "S1RTC")}
    sample = read_modalities(files, window=Window(0, 0, 48, 32))  # non-square, 14 channels
    enc = build_encoder("olmoearth_v1_nano", weights=_weights(official), bands=sample.band_names,
                        **official["config"]).eval()
    mean, std = olmoearth_stats(sample.band_names)
    x = (torch.as_tensor(sample.image, dtype=torch.float32) - torch.tensor(mean)[:, None, None]) \
        / torch.tensor(std)[:, None, None]
    md = {k: torch.as_tensor(v)[None] for k, v in sample.metadata.items() if k in ("timestamps", "gsd")}
    with torch.no_grad():
        out = enc(x[None], metadata=md)
        s2_only = build_encoder("olmoearth_v1_nano", weights=_weights(official), bands=sample.band_names[:12],
                                **official["config"]).eval()(x[None, :12], metadata=md)
    assert tuple(out.shape) == (1, 32, 4, 6) and torch.isfinite(out).all()
    assert not torch.allclose(out, s2_only, atol=1e-3)  # the radar is used


def test_statistics_normalize_sentinel2_dn_and_sentinel1_db_as_upstream_does():
    """Sentinel-2 L2A DN at upstream's mean land at 0.5 and one std above at 0.75 (its
    ``(x - (mean - 2 std)) / (4 std)``); an image in reflectance (DN / 10 000) is far off."""
    mean, std = olmoearth_stats(["S2L2A:B04", "S1RTC:VV"])
    b04, vv = (1513.0573882432757, 1740.7757298757895), (-11.648990747328444, 10.840350299936597)
    for (m, s), mu, sd in zip((b04, vv), mean, std):
        assert (m - mu) / sd == pytest.approx(0.5) and (m + s - mu) / sd == pytest.approx(0.75)
    assert OLMOEARTH_S2_STATS.units == "dn" and abs((0.15 - mean[0]) / std[0] - 0.5) > 0.2


@pytest.mark.skipif(not os.environ.get("OLMOEARTH_REPO"), reason="set OLMOEARTH_REPO to an olmoearth_pretrain checkout")
def test_statistics_equal_upstreams_normalizer():
    """Upstream's own ``Normalizer(Strategy.COMPUTED)`` (the one its inference quickstart applies)
    on random Sentinel-2 L2A DN and Sentinel-1 dB equals ``(x - mean) / std`` with our statistics."""
    sys.path.insert(0, os.environ["OLMOEARTH_REPO"])
    try:
        from olmoearth_pretrain.data.constants import Modality
        from olmoearth_pretrain.data.normalize import Normalizer, Strategy
    finally:
        sys.path.pop(0)
    import numpy as np

    norm = Normalizer(Strategy.COMPUTED)
    rng = np.random.default_rng(0)
    for spec, prefix, low, high in ((Modality.SENTINEL2_L2A, "S2L2A", 0, 10000), (Modality.SENTINEL1, "S1RTC", -30, 5)):
        x = rng.uniform(low, high, size=(4, len(spec.band_order)))
        mean, std = olmoearth_stats([f"{prefix}:{b}" for b in spec.band_order])
        ours = (x - np.asarray(mean)) / np.asarray(std)
        np.testing.assert_allclose(ours, norm.normalize(spec, x), rtol=1e-10, atol=1e-10)
