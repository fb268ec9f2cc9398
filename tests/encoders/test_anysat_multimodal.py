"""AnySat with several modalities in one encoder (Sentinel-2 + Sentinel-1 ascending series on one grid),
against the publishers' hub model: ``tests/fixtures/make_anysat_fixture.py --multimodal`` ran a small hub
model (64 wide, so that the L-TAE's output depends on the pixels) once on both modalities together
(8 x 8 px at 20 m patches, 6 x 6 at 30 m; upstream's hub model takes square inputs only) and stored its raw
trunk taps and its ``patch`` output, where one query per patch attends over both modalities' tokens.
With ``ANYSAT_REPO`` set, also live (another seed)."""
import os
import sys
import warnings
from datetime import datetime, timezone

import pytest
import torch

from helpers import rel_err
from d2geo.encoders import BandError, CheckpointError, build_encoder

DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures", "anysat_multimodal_tiny.pt")
TOL = 1e-4
EPOCH_2021 = datetime(2021, 1, 1, 12, tzinfo=timezone.utc).timestamp()
S2 = ["B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12"]
CHANNELS = [f"S2L2A:{b}" for b in S2] + ["S1RTC:VV", "S1RTC:VH"]


@pytest.fixture(scope="module")
def official():
    return torch.load(DATA, weights_only=True)


def _sd(official):
    return {"state_dict": {k: v.float() for k, v in official["state_dict"].items()}}


def _stack(inputs, doy):
    """Upstream's per-modality (B, T, C, H, W) series -> our (B, C, T, H, W) stack with timestamps."""
    x = torch.cat([inputs["s2"].float(), inputs["s1-asc"].float()], 2).permute(0, 2, 1, 3, 4)
    return x, {"gsd": 10.0, "timestamps": EPOCH_2021 + doy.double() * 86400}


def _check(enc, x, md, taps, patch):
    with torch.no_grad():
        ours = enc.forward_features(x, layers=list(range(enc.depth)), norm=True, metadata=md)
    B, D, h, w = patch.shape
    for i, t in enumerate(taps):  # a trunk tap: each position's two modality tokens averaged
        want = t.reshape(B, 2, h, w, D).mean(1).permute(0, 3, 1, 2)
        assert ours[i].shape == want.shape and rel_err(ours[i], want) <= TOL, i
    assert ours[-1].shape == patch.shape and rel_err(ours[-1], patch) <= TOL


def test_two_modalities_match_the_official_hub_model(official):
    for case in official["cases"]:
        enc = build_encoder("anysat_base", weights=_sd(official), bands=CHANNELS, patch_size_m=case["patch_size_m"],
                            **official["config"]).eval()
        assert enc.modalities == ("s2", "s1-asc") and enc.in_chans == 12
        x, md = _stack(case["inputs"], case["doy"])
        _check(enc, x, md, case["taps"], case["patch"])


def test_bare_modality_names_and_radar_changes_the_patch_output(official):
    case = official["cases"][0]
    enc = build_encoder("anysat_base", weights=_sd(official), bands=["S2L2A", "S1RTC"],
                        patch_size_m=case["patch_size_m"], **official["config"]).eval()
    assert list(enc.bands) == CHANNELS
    x, md = _stack(case["inputs"], case["doy"])
    x2 = x.clone()
    x2[:, 10:] = torch.randn(x2[:, 10:].shape, generator=torch.Generator().manual_seed(0))  # other radar
    with torch.no_grad():
        assert not torch.allclose(enc(x, metadata=md), enc(x2, metadata=md), atol=1e-4)


def test_refuses_bad_multimodal_channels_checkpoints_and_windows(official):
    cfg = official["config"]
    with pytest.raises(BandError, match="S1GRD and S1RTC both feed AnySat's s1-asc"):
        build_encoder("anysat_base", bands=["S1GRD:VV", "S1RTC:VH"], **cfg)
    with pytest.raises(BandError, match="not one of AnySat's s2 bands"):
        build_encoder("anysat_base", bands=["S2L2A:B01", "S1RTC:VV"], **cfg)
    with pytest.raises(BandError, match="channel 'B04'.*'<MODALITY>:<band>'"):
        build_encoder("anysat_base", bands=["B04", "S1RTC:VV"], **cfg)
    with pytest.raises(ValueError, match="modality='aerial' but the channels"):
        build_encoder("anysat_base", bands=["S2L2A", "S1RTC"], modality="aerial", **cfg)
    sd = {"state_dict": {k: v.float() for k, v in official["state_dict"].items() if "projector_s1-asc" not in k}}
    with pytest.raises(CheckpointError, match="no projector_s1-asc"):
        build_encoder("anysat_base", weights=sd, bands=["S2L2A", "S1RTC"], **cfg)
    enc = build_encoder("anysat_base", bands=["S2L2A", "S1RTC"], **cfg)
    with pytest.raises(ValueError, match="window attention is not built for a multi-modal AnySat"):
        enc.set_window_attention(4)


@pytest.mark.skipif(not os.environ.get("ANYSAT_REPO"), reason="set ANYSAT_REPO to a checkout of gastruc/AnySat")
def test_two_modalities_match_live():
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures"))
    warnings.filterwarnings("ignore")
    from make_anysat_fixture import multimodal_reference

    test_two_modalities_match_the_official_hub_model(multimodal_reference(os.environ["ANYSAT_REPO"], seed=3))


def test_real_s2_s1_tiles_through_read_modalities(terramind_examples, official):
    pytest.importorskip("detectron2", reason="d2geo.data needs detectron2: see README for installing it from source")
    from rasterio.windows import Window

    from d2geo.data.geotiff import read_modalities

    name = sorted(os.listdir(os.path.join(terramind_examples, "S2L2A")))[0]
    files = {m: os.path.join(terramind_examples, m, name) for m in ("S2L2A", "S1RTC")}
    sample = read_modalities(files, bands=["S2L2A:" + b for b in S2] + ["S1RTC"], window=Window(0, 0, 24, 16))
    enc = build_encoder("anysat_base", weights=_sd(official), bands=sample.band_names, frames=1, patch_size_m=40,
                        **official["config"]).eval()
    x = torch.as_tensor(sample.image, dtype=torch.float32)[None]
    x[:, :10] /= 10000.0
    x[:, 10:] /= 20.0
    md = {k: torch.as_tensor(v)[None] for k, v in sample.metadata.items() if k in ("timestamps", "gsd")}
    with torch.no_grad():
        out = enc(x, metadata=md)
    assert tuple(out.shape) == (1, 64, 4, 6) and torch.isfinite(out).all()  # non-square: 16 x 24 px
