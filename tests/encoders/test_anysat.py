"""AnySat fidelity against the publishers' code (github.com/gastruc/AnySat, the model its
``hubconf.py`` builds), carried as data: ``tests/fixtures/make_anysat_fixture.py`` ran a tiny
random-weight hub model (seed in the file) and stored its ``AnyModule`` state dict (the published
file's layout), the inputs with their dates, and the outputs of every trunk block and of the hub's
``output="patch"`` for Sentinel-2 time series (3 dates, 2 dates at 10 m patches), a single-date
Sentinel-2 image, a Sentinel-1 ascending series and a 0.2 m aerial image, at patch sizes 10..30 m.

With ``ANYSAT_REPO`` pointing at a checkout of that repository, the hub model is also run live at
sizes, patch sizes and dates the fixture does not hold.
"""
import os
import sys
import warnings
from datetime import datetime, timezone

import pytest
import torch

from helpers import rel_err
from d2geo.encoders import CheckpointError, EncoderInputError, build_encoder, describe
from d2geo.encoders.anysat import anysat_buckets, anysat_sincos, day_of_year

DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures", "anysat_official_tiny.pt")
TOL = 1e-4
EPOCH_2021 = datetime(2021, 1, 1, 12, tzinfo=timezone.utc).timestamp()


@pytest.fixture(scope="module")
def official():
    return torch.load(DATA, weights_only=True)


@pytest.fixture(scope="module")
def hub_file(official, tmp_path_factory):
    """The tiny model in the published file's form (``{"state_dict": AnyModule.state_dict()}``)."""
    path = tmp_path_factory.mktemp("anysat") / "AnySat_tiny.pth"
    torch.save({"state_dict": {k: v.float() for k, v in official["state_dict"].items()}}, path)
    return path


def _inputs(case):
    """Our layout of a fixture case: ``(B, C, T, H, W)`` with timestamps of its days of the year."""
    x = case["input"].float()
    md = {"gsd": 0.2 if case["modality"] == "aerial" else 10.0}
    if x.ndim == 5:
        x = x.permute(0, 2, 1, 3, 4)
        md["timestamps"] = EPOCH_2021 + case["doy"].double() * 86400
    return x, md


def _compare(enc, x, md, refs, what):
    with torch.no_grad():
        ours = enc.forward_features(x, layers=list(range(enc.depth)), norm=True, metadata=md)
    assert len(ours) == len(refs)
    for i, (o, r) in enumerate(zip(ours, refs)):
        assert o.shape == r.shape and rel_err(o, r) <= TOL, (what, i)


def test_matches_official_anysat_for_modalities_and_patch_sizes(official, hub_file):
    """The published-layout file loads into one encoder per modality (the others' projectors are
    ignored) and gives the official trunk blocks and ``patch`` output."""
    for case in official["cases"]:
        enc = build_encoder("anysat_base", weights=hub_file, modality=case["modality"],
                            patch_size_m=case["patch_size_m"], **official["config"]).eval()
        x, md = _inputs(case)
        _compare(enc, x, md, case["blocks"], (case["modality"], tuple(x.shape)))


def test_fixture_output_depends_on_the_pixels(official, hub_file):
    """The fixture can catch an error on the pixel path: with the first two bands of every case swapped,
    every stored block differs from ours by over 100 x the tolerance. (A 32-wide model failed this: its
    L-TAE's first GroupNorm(4) normalizes one feature per group, so its series outputs depend only on the
    dates: swapped bands or added noise moved them by under 1e-5.)"""
    for case in official["cases"]:
        enc = build_encoder("anysat_base", weights=hub_file, modality=case["modality"],
                            patch_size_m=case["patch_size_m"], **official["config"]).eval()
        x, md = _inputs(case)
        swapped = x.clone()
        swapped[:, [0, 1]] = x[:, [1, 0]]
        with torch.no_grad():
            ours = enc.forward_features(swapped, layers=list(range(enc.depth)), norm=True, metadata=md)
        for i, (o, r) in enumerate(zip(ours, case["blocks"])):
            assert rel_err(o, r) > 100 * TOL, (case["modality"], tuple(x.shape), i)


def test_single_date_sentinel2_takes_an_image(official, hub_file):
    """``frames=1``: a (B, C, H, W) image is the one-date series; its date from timestamps or
    from ``default_doy``."""
    case = next(c for c in official["cases"] if c["modality"] == "s2" and c["input"].shape[1] == 1)
    x, md = _inputs(case)
    img = x[:, :, 0]
    enc = build_encoder("anysat_base", weights=hub_file, frames=1, patch_size_m=case["patch_size_m"],
                        **official["config"]).eval()
    _compare(enc, img, md, case["blocks"], "timestamps")
    enc = build_encoder("anysat_base", weights=hub_file, frames=1, patch_size_m=case["patch_size_m"],
                        default_doy=int(case["doy"][0, 0]), **official["config"]).eval()
    _compare(enc, img, {"gsd": 10.0}, case["blocks"], "default_doy")


def test_band_subset_keeps_the_matching_projector_columns(official, hub_file):
    """An encoder for some of the modality's bands, in another order, equals the full model fed
    zeros in the missing bands."""
    case = official["cases"][0]
    x, md = _inputs(case)
    bands = ["B8A", "B04", "B03", "B02", "B12"]
    order = [7, 2, 1, 0, 9]
    full = build_encoder("anysat_base", weights=hub_file, patch_size_m=case["patch_size_m"], **official["config"]).eval()
    sub = build_encoder("anysat_base", weights=hub_file, bands=bands, patch_size_m=case["patch_size_m"],
                        **official["config"]).eval()
    zeroed = torch.zeros_like(x)
    zeroed[:, order] = x[:, order]
    with torch.no_grad():
        want = full(zeroed, metadata=md)
        got = sub(x[:, order], metadata=md)
    assert rel_err(got, want) <= TOL


def test_rectangular_grids_extend_the_square_codes():
    """Non-square inputs (upstream asserts square ones): the patch codes and relative-position
    buckets of an h x w grid are those of the cells of a larger square grid at the same rows and
    columns, so a square grid gives exactly upstream's values."""
    h, w, n = 2, 5, 5
    sq, rect = anysat_buckets(n, n), anysat_buckets(h, w)
    cells = torch.tensor([1 + r * n + c for r in range(h) for c in range(w)])
    keep = torch.cat([torch.tensor([0]), cells])
    assert torch.equal(rect, sq[keep][:, keep])
    assert torch.equal(anysat_sincos(16, h, w, 3.0), anysat_sincos(16, n, n, 3.0)[keep])
    assert int(sq[1, 2]) == 4 and int(sq[1, 1]) == 3 and int(sq[0, 5]) == 7 and int(sq.max()) == 7


def test_day_of_year_is_the_calendars():
    """Timestamps -> day of the year (1 January = 0) in tensor ops, as datetime counts it, across
    leap years, century years and the hours of a day."""
    ts = torch.cat([torch.arange(63072000.0, 4102444800.0, 86400 * 7.3),  # 1972 .. 2100, every 7.3 days
                    torch.tensor([951782400.0, 951868799.0, 4107542399.0, 1609459199.0])]).double()
    want = [datetime.fromtimestamp(float(t), timezone.utc).timetuple().tm_yday - 1 for t in ts]
    assert day_of_year(ts).tolist() == want


def test_non_square_input_runs(official, hub_file):
    enc = build_encoder("anysat_base", weights=hub_file, patch_size_m=20, **official["config"]).eval()
    x = torch.randn(1, 10, 2, 8, 12)
    with torch.no_grad():
        out = enc(x, metadata={"gsd": 10.0, "timestamps": torch.full((1, 2), EPOCH_2021, dtype=torch.float64)})
    assert out.shape == (1, official["config"]["embed_dim"], 4, 6) and torch.isfinite(out).all()


def test_missing_or_wrong_gsd_and_dates_are_refused(official, hub_file):
    enc = build_encoder("anysat_base", weights=hub_file, patch_size_m=20, **official["config"]).eval()
    x = torch.randn(1, 10, 2, 8, 8)
    ts = torch.full((1, 2), EPOCH_2021, dtype=torch.float64)
    with pytest.raises(EncoderInputError, match="needs the ground sample distance"):
        enc(x, metadata={"timestamps": ts})
    with pytest.raises(EncoderInputError, match="is not the 10 m"):
        enc(x, metadata={"gsd": 30.0, "timestamps": ts})
    with pytest.raises(EncoderInputError, match="looks like kilometres"):
        enc(x, metadata={"gsd": 0.01, "timestamps": ts})
    with pytest.raises(EncoderInputError, match="day of the year"):
        enc(x, metadata={"gsd": 10.0})
    with pytest.raises(EncoderInputError, match="multiple of the patch size 2"):
        enc(torch.randn(1, 10, 2, 8, 7), metadata={"gsd": 10.0, "timestamps": ts})
    aerial = build_encoder("anysat_base", modality="aerial", patch_size_m=10, **official["config"]).eval()
    with pytest.raises(EncoderInputError, match="is not the 0.2 m"):
        aerial(torch.randn(1, 4, 50, 50), metadata={"gsd": 10.0})


def test_unsupported_settings_are_refused_by_name():
    with pytest.raises(ValueError, match="modality 'l8' is not built here .*upstream also has"):
        build_encoder("anysat_base", modality="l8")
    with pytest.raises(ValueError, match="multiple of 10 m"):
        build_encoder("anysat_base", patch_size_m=25)
    with pytest.raises(ValueError, match="frames=1"):
        build_encoder("anysat_base", modality="aerial", frames=1)
    with pytest.raises(ValueError, match=r"unknown \['B01'\]"):
        build_encoder("anysat_base", bands=["B01", "B02"])
    with pytest.raises(ValueError, match="default_doy=400"):
        build_encoder("anysat_base", default_doy=400)


def test_foreign_checkpoint_tensors_are_refused(official, tmp_path):
    sd = {k: v.float() for k, v in official["state_dict"].items()}
    sd["spatial_encoder.extra.weight"] = torch.zeros(2)
    path = tmp_path / "bad.pth"
    torch.save({"state_dict": sd}, path)
    sd.pop("spatial_encoder.extra.weight")
    sd["head.fc.weight"] = torch.zeros(2)
    path2 = tmp_path / "bad2.pth"
    torch.save({"state_dict": sd}, path2)
    with pytest.raises(CheckpointError):
        build_encoder("anysat_base", weights=path, **official["config"])
    with pytest.raises(CheckpointError, match="head.fc.weight is no part of the published AnySat model"):
        build_encoder("anysat_base", weights=path2, **official["config"])


def test_d2geo_state_dict_round_trips(official, hub_file):
    case = official["cases"][3]
    enc = build_encoder("anysat_base", weights=hub_file, modality="s1-asc", patch_size_m=20, **official["config"])
    again = build_encoder("anysat_base", weights=enc.state_dict(), modality="s1-asc", patch_size_m=20,
                          **official["config"]).eval()
    _compare(again, *_inputs(case), case["blocks"], "round trip")


def test_card_names_the_reference_and_why_unpinned():
    text = str(describe("anysat_base"))
    assert "gastruc/AnySat" in text and "MIT" in text and "no public source" in text


LIVE = pytest.mark.skipif(not os.environ.get("ANYSAT_REPO"), reason="set ANYSAT_REPO to a checkout of "
                          "github.com/gastruc/AnySat to also run the hub model live")


@LIVE
def test_matches_live_official_module(official, hub_file):
    repo = os.environ["ANYSAT_REPO"]
    sys.path[:0] = [repo, os.path.join(repo, "src")]
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures"))
    warnings.filterwarnings("ignore")
    import hubconf
    from make_anysat_fixture import tiny_config

    cfg = tiny_config(hubconf, official["config"]["embed_dim"])
    hubconf.get_default_config = lambda size="base": cfg
    ref = hubconf.AnySat(model_size="tiny", flash_attn=False).eval()
    ref.model.load_state_dict({k: v.float() for k, v in official["state_dict"].items()})
    torch.manual_seed(1)
    for modality, shape, patch_m in [("s2", (2, 5, 10, 12, 12), 40), ("s1-asc", (1, 3, 2, 10, 10), 50),
                                     ("aerial", (2, 4, 150, 150), 10)]:
        x = torch.randn(shape)
        data, md = {modality: x}, {"gsd": 0.2 if modality == "aerial" else 10.0}
        if x.ndim == 5:
            doy = torch.randint(0, 365, shape[:2]).float()
            data[modality + "_dates"] = doy
            md["timestamps"] = EPOCH_2021 + doy.double() * 86400
            x = x.permute(0, 2, 1, 3, 4)
        enc = build_encoder("anysat_base", weights=hub_file, modality=modality, patch_size_m=patch_m,
                            **official["config"]).eval()
        with torch.no_grad():
            want = ref(data, patch_size=patch_m, output="patch").permute(0, 3, 1, 2)
            got = enc(x, metadata=md)
        assert rel_err(got, want) <= TOL, modality


@pytest.mark.slow  # torch.export of the three nested transformers: ~40 s on a busy CPU
def test_exported_with_gsd_and_timestamps_as_inputs_follows_size_and_dates():
    """torch.export with the GSD and timestamps as tensor inputs and dynamic height and width: one
    program serves other (non-square) sizes and other dates."""
    torch.manual_seed(0)
    enc = build_encoder("anysat_base", embed_dim=32, depth=1, num_heads=2, patch_size_m=20).eval()
    with torch.no_grad():
        for n, p in enc.named_parameters():
            p.add_(0.2 * torch.randn_like(p))

    class WithMetadata(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, image, gsd, timestamps):
            return self.net(image, metadata={"gsd": gsd, "timestamps": timestamps})

    model = WithMetadata(enc)
    x, gsd = torch.randn(1, 10, 2, 8, 12), torch.tensor([10.0])
    ts = EPOCH_2021 + torch.tensor([[30.0, 200.0]], dtype=torch.float64) * 86400
    dyn = {3: torch.export.Dim.AUTO, 4: torch.export.Dim.AUTO}
    ep = torch.export.export(model, (x, gsd, ts), dynamic_shapes=(dyn, None, None))
    other = EPOCH_2021 + torch.tensor([[100.0, 360.0]], dtype=torch.float64) * 86400
    with torch.no_grad():
        for y, t in [(torch.randn(1, 10, 2, 16, 6), other), (x, ts)]:
            assert rel_err(ep.module()(y, gsd, t), model(y, gsd, t)) <= 1e-5
        assert rel_err(model(x, gsd, other), model(x, gsd, ts)) > 1e-3  # the dates matter
