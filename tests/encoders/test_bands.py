"""The band vocabulary (d2geo.encoders.bands) and band selection of pretrained weights."""
from __future__ import annotations

import logging
import re

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from d2geo.encoders import build_encoder
from d2geo.encoders.adapt import select_bands
from d2geo.encoders.bands import (HLS_BANDS, RGB_BANDS, SENSORS, BandError, band_wavelengths, match_bands,
                                  sensor_band)

#: other names of each pretrained band, written from the sensors' documentation (ESA's
#: Sentinel-2 band ids, USGS Landsat C2 ids and asset names, STAC eo common names, HLS and
#: Prithvi names), not from the module under test
NAMES = {
    "red": ["red", "RED", "R", "B04", "b04", "B4", "SR_B4"],
    "green": ["green", "G", "B03", "B3", "SR_B3"],
    "blue": ["blue", "Blue", "B", "B02", "B2", "SR_B2"],
    "nir_narrow": ["nir_narrow", "NIR_NARROW", "B8A", "b8a", "nir08", "B5", "SR_B5", "nir"],
    "swir_1": ["swir_1", "SWIR_1", "B11", "swir16", "B6", "SR_B6", "swir1"],
    "swir_2": ["swir_2", "B12", "swir22", "B7", "SR_B7", "swir2"],
}
#: centre wavelengths (micrometres) from the ESA Sentinel-2 L2A band table
S2_WAVELENGTHS = {"B02": 0.493, "B03": 0.560, "B04": 0.665, "B8A": 0.865, "B11": 1.610, "B12": 2.190}


def test_prithvi_bands_named_by_sentinel2_ids_keep_their_pretrained_weights():
    w = torch.randn(8, 6, 2, 2)
    out = select_bands(w, HLS_BANDS, ["B02", "B03", "B04", "B8A", "B11", "B12"])
    torch.testing.assert_close(out, w)  # all six bands found, in the same order
    out = select_bands(w, HLS_BANDS, ["B12", "B02"])
    torch.testing.assert_close(out, w[:, [5, 0]])


@pytest.mark.parametrize("bands", ["rgb", "RGB", ["R", "G", "B"], ["B04", "B03", "B02"], ("Red", "Green", "Blue")])
def test_rgb_names_map_onto_dino_rgb(bands):
    w = torch.randn(8, 3, 2, 2)
    torch.testing.assert_close(select_bands(w, RGB_BANDS, bands), w)


def test_no_pretrained_band_kept_is_an_error_listing_what_the_weights_know():
    w = torch.randn(8, 6, 2, 2)
    with pytest.raises(BandError, match=r"none of the bands \['VV', 'VH'\].*The weights know: blue \(= B02\), "
                                        r"green \(= B03\), red \(= B04\), nir_narrow \(= B8A, nir08\)"):
        select_bands(w, HLS_BANDS, ["VV", "VH"])


def test_ambiguous_band_is_an_error():
    w = torch.randn(8, 3, 2, 2)
    with pytest.raises(BandError, match=r"'nir' is ambiguous: it could be any of \['B08', 'B8A'\].*"
                                        r"The pretrained weights know: B04"):
        select_bands(w, ["B04", "B08", "B8A"], ["B04", "nir"])
    # with one NIR band in the weights, 'nir' is that band
    torch.testing.assert_close(select_bands(torch.arange(6.).view(1, 6, 1, 1), HLS_BANDS, ["nir"]).flatten(),
                               torch.tensor([3.]))
    with pytest.raises(BandError, match="must be a list of band names, not the string 'rgbn'"):
        select_bands(w, RGB_BANDS, "rgbn")


def test_partial_overlap_keeps_matched_bands_and_logs_new_ones(caplog):
    w = torch.randn(8, 6, 2, 2)
    with caplog.at_level(logging.INFO, logger="d2geo.encoders.adapt"):
        out = select_bands(w, HLS_BANDS, ["B04", "B05", "VV", "B8A"])
    torch.testing.assert_close(out[:, 0], w[:, 2])
    torch.testing.assert_close(out[:, 3], w[:, 3])
    assert out[:, 1].abs().sum() == 0 and out[:, 2].abs().sum() == 0
    assert "new bands ['B05', 'VV'] start at zero" in caplog.text


def test_sensor_vocabulary():
    # Sentinel-2 file bands, asked for with Prithvi's names
    s2 = [b.id for b in SENSORS["sentinel-2-l2a"]]
    assert s2 == ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12"]
    assert match_bands(HLS_BANDS, s2) == [1, 2, 3, 8, 10, 11]
    assert [b.id for b in SENSORS["sentinel-2-l1c"]][10] == "B10"
    with pytest.raises(BandError, match="'nir' is ambiguous"):
        match_bands(["nir"], s2)
    # in Sentinel-2's own vocabulary 'nir' is B08 (STAC common name), B5 is no Sentinel-2 id
    assert sensor_band("sentinel-2-l2a", "nir").id == "B08"
    assert sensor_band("sentinel-2-l2a", "nir_narrow").id == "B8A"
    assert sensor_band("sentinel-2-l2a", "B5") is None
    assert sensor_band("landsat-c2", "B5").name == "nir08"
    assert sensor_band("hls", "nir").name == "nir_narrow"
    torch.testing.assert_close(band_wavelengths("sentinel-2-l2a", list(S2_WAVELENGTHS)),
                               torch.tensor(list(S2_WAVELENGTHS.values())))
    torch.testing.assert_close(band_wavelengths("sentinel-1", ["VV", "vh"]), torch.tensor([3.5, 4.0]))
    torch.testing.assert_close(band_wavelengths("naip", ["R", "nir"]), torch.tensor([0.65, 0.842]))


def test_prithvi_built_with_sentinel2_ids_loads_the_whole_pretrained_kernel():
    kw = dict(embed_dim=32, depth=1, num_heads=2, img_size=32, num_frames=1)
    sd = build_encoder("prithvi_eo_v2_300", **kw).state_dict()
    enc = build_encoder("prithvi_eo_v2_300", weights=sd, bands=["B02", "B03", "B04", "B8A", "B11", "B12"], **kw)
    torch.testing.assert_close(enc.patch_embed["proj"].weight, sd["patch_embed.proj.weight"])
    dino = build_encoder("dinov3_test", depth=1)
    sd = dino.vit.state_dict()
    enc = build_encoder("dinov3_test", depth=1, weights=sd, bands="rgb")
    torch.testing.assert_close(enc.vit.patch_embed.proj.weight, sd["patch_embed.proj.weight"])


# -- property: the output depends on every band the encoder was built for ------------------
def _family(name):
    """The family's test variant at one block (Prithvi: v2 without time and location codes,
    which need no metadata)."""
    if name == "dinov2":
        return "dinov2_test", dict(depth=1, img_size=28), RGB_BANDS, (1, 3, 28, 28), lambda e: e.vit.state_dict()
    if name == "dinov3":
        return "dinov3_test", dict(depth=1), RGB_BANDS, (1, 3, 32, 32), lambda e: e.vit.state_dict()
    kw = dict(embed_dim=32, depth=1, num_heads=2, img_size=32, num_frames=1)
    return "prithvi_eo_v2_300", kw, HLS_BANDS, (1, 6, 1, 32, 32), lambda e: e.state_dict()


_PRETRAINED = {}


def _pretrained(family):
    if family not in _PRETRAINED:
        torch.manual_seed(0)
        name, kw, bands, shape, sd = _family(family)
        _PRETRAINED[family] = sd(build_encoder(name, **kw))
    return _PRETRAINED[family]


@st.composite
def band_requests(draw, pretrained):
    """A reordered, non-empty subset of the pretrained bands, each under one of its names."""
    chosen = draw(st.permutations(list(pretrained)).flatmap(
        lambda p: st.integers(1, len(p)).map(lambda k: p[:k])))
    return [(b, draw(st.sampled_from(NAMES[b]))) for b in chosen]


@pytest.mark.parametrize("family", ["dinov2", "dinov3", "prithvi"])
@settings(max_examples=12, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_output_depends_on_every_band_it_was_built_for(family, data):
    name, kw, pretrained, shape, _ = _family(family)
    request = data.draw(band_requests(pretrained))
    names = [n for _, n in request]
    enc = build_encoder(name, weights=_pretrained(family), bands=names, **kw).eval()
    # each band kept its own pretrained kernel
    kernel = enc.patch_embed["proj"].weight if family == "prithvi" else enc.vit.patch_embed.proj.weight
    full = _pretrained(family)["patch_embed.proj.weight"]
    for j, (band, _) in enumerate(request):
        torch.testing.assert_close(kernel[:, j], full[:, list(pretrained).index(band)])
    torch.manual_seed(1)
    x = torch.randn(shape[0], len(names), *shape[2:])
    with torch.no_grad():
        ref = enc.forward_features(x, layers=[0])[0]
        for j in range(len(names)):
            y = x.clone()
            y[:, j] += 1.0
            assert (enc.forward_features(y, layers=[0])[0] - ref).abs().max() > 1e-4, (family, names[j])


@settings(max_examples=4, deadline=None, database=None)
@given(data=st.data())
def test_clay_output_depends_on_every_band_it_was_built_for(data):
    kw = dict(depth=1, gsd=10.0)
    request = data.draw(band_requests(["blue", "green", "red", "nir_narrow", "swir_1", "swir_2"]))
    # in Sentinel-2's vocabulary Landsat ids are no names and 'nir' is B08: leave them out
    names = [n for b, n in request if not re.fullmatch(r"(SR_)?B\d|nir", n)] or ["B02"]
    torch.manual_seed(0)
    enc = build_encoder("clay_test", sensor="sentinel-2-l2a", bands=names, **kw).eval()
    ids = [sensor_band("sentinel-2-l2a", n).id for n in names]
    torch.testing.assert_close(enc._wavelengths({}, len(names)),
                               torch.tensor([S2_WAVELENGTHS[i] for i in ids]))
    x = torch.randn(1, len(names), 32, 32)
    with torch.no_grad():
        ref = enc.forward_features(x, layers=[0])[0]
        for j in range(len(names)):
            y = x.clone()
            y[:, j] += 1.0
            assert (enc.forward_features(y, layers=[0])[0] - ref).abs().max() > 1e-4, names[j]


#: Landsat 8/9 OLI/TIRS band ranges (micrometres), from USGS's Landsat 8 band designations
LANDSAT_L1_RANGES = {"B8": (0.503, 0.676), "B9": (1.363, 1.384), "B10": (10.60, 11.19), "B11": (11.50, 12.51)}


def test_landsat_level1_bands():
    """Landsat's B8 (pan), B9 (cirrus), B10/B11 (thermal) with their wavelengths; read with the
    Landsat sensor, B10/B11 are thermal, read without one they stay Sentinel-2's; SR_/ST_
    asset names are Landsat ids."""
    l1 = SENSORS["landsat-c2-l1"]
    assert [b.id for b in l1] == [f"B{i}" for i in range(1, 12)]
    assert l1[:7] == SENSORS["landsat-c2"]  # the reflective bands are one fact
    for band, (lo, hi) in LANDSAT_L1_RANGES.items():
        assert lo <= sensor_band("landsat-c2-l1", band).wavelength <= hi, band
    assert [sensor_band("landsat-c2-l1", b).name for b in ("B8", "B9", "B10", "B11")] == \
        ["pan", "cirrus", "lwir11", "lwir12"]
    assert sensor_band("landsat-c2-l1", "ST_B10").id == "B10"
    assert sensor_band("landsat-c2-l1", "SR_B4").id == sensor_band("landsat-c2", "SR_B4").id == "B4"
    assert sensor_band("landsat-c2", "B10") is None and sensor_band("sentinel-2-l1c", "B9") is None
    # without a sensor: B10/B11 are Sentinel-2's; Landsat's own by name or asset name
    assert match_bands(["B10", "B11"], ["cirrus", "swir16", "lwir11", "lwir12"]) == [0, 1]
    assert match_bands(["lwir11", "ST_B10", "tirs2", "pan", "B9"], [b.id for b in l1],
                       available_sensor="landsat-c2-l1") == [9, 9, 10, 7, 8]
    # Sentinel-2 cirrus B10 is Landsat's cirrus B9, not its thermal B10
    assert match_bands(["B10"], [b.id for b in l1], sensor="sentinel-2-l1c",
                       available_sensor="landsat-c2-l1") == [8]
    from d2geo.encoders.bands import describe_bands
    assert describe_bands(["lwir11", "pan"]) == "lwir11, pan (= B8)"  # B10 alone would be cirrus


def test_zero_padded_landsat_ids_under_a_landsat_sensor():
    """B01..B09 (torchgeo's and HLS L30's spelling of Landsat ids) are Landsat's bands when the
    sensor is Landsat; without a Landsat sensor they stay Sentinel-2's."""
    assert sensor_band("landsat-c2-l1", "B05").id == "B5" and sensor_band("landsat-c2-l1", "B05").name == "nir08"
    assert sensor_band("landsat-c2", "SR_B07").id == "B7"
    assert sensor_band("landsat-c2-l1", "B08").name == "pan"
    assert sensor_band("sentinel-2-l1c", "B05").name == "rededge1"
    assert sensor_band("landsat-c2", "B8A") is None and sensor_band("landsat-c2", "B012") is None
