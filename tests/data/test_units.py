"""The units check (d2geo.data.units): good data pass, unit mistakes are refused with the fix."""
from __future__ import annotations

import glob
import logging
import os

import numpy as np
import pytest

rasterio = pytest.importorskip("rasterio")

from d2geo.data.geotiff import GeoTiffError, read_geotiff, read_modalities  # noqa: E402
from d2geo.data.stats import get_stats  # noqa: E402
from d2geo.data.synthetic import synthetic_pixel_stats  # noqa: E402
from d2geo.data.units import UnitsError, check_units  # noqa: E402
from d2geo.encoders.terramind import terramind_stats  # noqa: E402
from helpers import write_tif  # noqa: E402

L2A = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12")
HLS_FROM_L2A = ["B02", "B03", "B04", "B8A", "B11", "B12"]
CLAY_L2A = ["blue", "green", "red", "rededge1", "rededge2", "rededge3", "nir", "nir08", "swir16", "swir22"]


def _tiles(root, modality):
    tiles = sorted(glob.glob(os.path.join(root, modality, "*.tif")))
    assert len(tiles) == 5, tiles
    return tiles


def _check(sample, bands, stats, **kw):
    mean, std = stats
    return check_units(sample, band_names=list(bands), mean=mean, std=std, source="tile", **kw)


def _refused(sample, bands, stats, **kw) -> UnitsError:
    with pytest.raises(UnitsError) as e:
        _check(sample, bands, stats, **kw)
    return e.value


def test_every_real_tile_passes_with_its_statistics_and_units(terramind_examples):
    """Every real tile, read in the units of the statistics it is checked against, passes."""
    for l2a_path in _tiles(terramind_examples, "S2L2A"):
        l1c_path = l2a_path.replace("S2L2A", "S2L1C")
        refl = read_geotiff(l2a_path, sensor="sentinel-2-l2a", fill=None, bands=HLS_FROM_L2A, scale=1e-4)
        _check(refl.image, HLS_FROM_L2A, get_stats("hls_burn_scars"))
        dn = read_geotiff(l2a_path, sensor="sentinel-2-l2a", fill=None)
        _check(dn.image, L2A, terramind_stats(["S2L2A"]))
        clay = read_geotiff(l2a_path, sensor="sentinel-2-l2a", fill=None, bands=CLAY_L2A)
        _check(clay.image, CLAY_L2A, get_stats("clay_sentinel-2-l2a"))
        l1c = read_geotiff(l1c_path, sensor="sentinel-2-l1c", fill=None, scale=1e-4)
        _check(l1c.image, l1c.band_names, get_stats("sen1floods11_s2"))
        l1c_dn = read_geotiff(l1c_path, sensor="sentinel-2-l1c", fill=None)
        _check(l1c_dn.image, l1c_dn.band_names, terramind_stats(["S2L1C"]))
        sar = read_modalities({"S1RTC": l2a_path.replace("S2L2A", "S1RTC")}, fill=None)
        report = _check(sar.image, sar.band_names, terramind_stats(["S1RTC"]))
        assert report.ok and report.judged == ["S1RTC:VV", "S1RTC:VH"]
        _check(10 ** (sar.image / 10), sar.band_names, get_stats("clay_sentinel-1-rtc"))
        rgb = read_modalities({"S2RGB": l2a_path.replace("S2L2A", "S2RGB")}, fill=None)
        _check(rgb.image, rgb.band_names, terramind_stats(["S2RGB"]))
        dem = read_modalities({"DEM": l2a_path.replace("S2L2A", "DEM")}, fill=None)
        assert _check(dem.image, dem.band_names, terramind_stats(["DEM"])).ok


def test_real_l2a_tile_without_dn_scale_is_refused_naming_dn_scale(terramind_examples):
    path = os.path.join(terramind_examples, "S2L2A", "38D_378R_2_3.tif")
    dn = read_geotiff(path, sensor="sentinel-2-l2a", fill=None, bands=HLS_FROM_L2A)
    err = _refused(dn.image, HLS_FROM_L2A, get_stats("hls_burn_scars"))
    assert err.report.problems == {"dn_for_reflectance": HLS_FROM_L2A}
    msg = str(err)
    assert "dn_scale=0.0001" in msg and "--dn-scale" in msg and "B02, B03, B04" in msg
    assert "median 758" in msg and "mean 0.0333" in msg  # observed and expected magnitudes
    assert "--skip-units-check" in msg and "allow=True" in msg
    assert isinstance(err, GeoTiffError)
    # every tile, not just this one
    for p in _tiles(terramind_examples, "S2L2A"):
        dn = read_geotiff(p, sensor="sentinel-2-l2a", fill=None, bands=HLS_FROM_L2A)
        _refused(dn.image, HLS_FROM_L2A, get_stats("hls_burn_scars"))


def test_real_tiles_in_the_wrong_units_are_refused(terramind_examples):
    for l2a_path in _tiles(terramind_examples, "S2L2A"):
        # a dn_scale too many: reflectance where the statistics are DN
        refl = read_geotiff(l2a_path, sensor="sentinel-2-l2a", fill=None, scale=1e-4)
        err = _refused(refl.image, L2A, terramind_stats(["S2L2A"]))
        assert set(err.report.problems) == {"reflectance_for_dn"} and "drop dn_scale" in str(err)
        # Sentinel-1 converted to linear power where TerraMind expects dB, and the reverse
        sar = read_modalities({"S1RTC": l2a_path.replace("S2L2A", "S1RTC")}, fill=None)
        err = _refused(10 ** (sar.image / 10), sar.band_names, terramind_stats(["S1RTC"]))
        assert err.report.problems == {"sar_linear_for_db": ["S1RTC:VV", "S1RTC:VH"]}
        assert "10 * log10" in str(err)
        err = _refused(sar.image, sar.band_names, get_stats("clay_sentinel-1-rtc"))
        assert set(err.report.problems) == {"sar_db_for_linear"} and "10 ** (dB / 10)" in str(err)
        # an 8-bit true-colour image against reflectance and against DN statistics
        rgb = read_modalities({"S2RGB": l2a_path.replace("S2L2A", "S2RGB")}, fill=None)
        for stats in (get_stats("hls_burn_scars", ["red", "green", "blue"]),
                      terramind_stats(["S2L2A:B04", "S2L2A:B03", "S2L2A:B02"])):
            err = _refused(rgb.image, ["red", "green", "blue"], stats)
            assert set(err.report.problems) == {"tci_8bit"} and "8-bit" in str(err)


def test_uint16_scene_without_scale_metadata_is_refused(tmp_path):
    rng = np.random.default_rng(0)
    mean, std = synthetic_pixel_stats()
    dn = np.clip(rng.normal(np.array(mean)[:, None, None], np.array(std)[:, None, None], (6, 64, 64)) * 10_000,
                 1, 10_000).astype(np.uint16)
    path = write_tif(tmp_path / "scene.tif", dn, names=["blue", "green", "red", "nir_narrow", "swir_1", "swir_2"])
    sample = read_geotiff(path, fill=None)
    err = _refused(sample.image, sample.band_names, (mean, std))
    assert set(err.report.problems) == {"dn_for_reflectance"}
    assert "dn_scale=0.0001" in str(err) and str(err).startswith("tile: ")
    # read as it should be: passes
    assert _check(read_geotiff(path, fill=None, scale=1e-4).image, sample.band_names, (mean, std)).ok


def test_float_reflectance_file_with_a_leftover_scale_tag_is_refused(tmp_path):
    rng = np.random.default_rng(1)
    mean, std = synthetic_pixel_stats()
    refl = np.clip(rng.normal(np.array(mean)[:, None, None], np.array(std)[:, None, None], (6, 64, 64)),
                   0.001, 1).astype(np.float32)
    path = write_tif(tmp_path / "refl.tif", refl, tags={"scale_factor": "0.0001"})
    sample = read_geotiff(path, fill=None)  # the file's scale tag is applied
    assert float(np.nanmax(sample.image)) < 1e-3
    err = _refused(sample.image, [f"b{i}" for i in range(6)], (mean, std))
    assert set(err.report.problems) == {"scaled_twice"} and "dn_scale=1" in str(err)
    ok = read_geotiff(path, fill=None, scale=1)
    assert _check(ok.image, [f"b{i}" for i in range(6)], (mean, std)).ok


def test_allow_goes_on_with_a_warning_and_nodata_is_ignored(caplog):
    rng = np.random.default_rng(2)
    img = rng.uniform(500, 4000, (3, 2, 32, 32)).astype(np.float32)  # (C, T, H, W) DN
    img[:, :, :16] = np.nan  # nodata: not counted
    stats = ([0.1, 0.1, 0.1], [0.05, 0.05, 0.05])
    with caplog.at_level(logging.WARNING, logger="d2geo.data.units"):
        report = _check(img, ["red", "green", "blue"], stats, allow=True)
    assert not report.ok and report.allowed and report.problems == {"dn_for_reflectance": ["red", "green", "blue"]}
    assert "switched off" in caplog.text and report.bands[0].valid == 3 * 2 * 16 * 32 // 3
    # (T, C, H, W) is recognized when only axis 1 holds the bands
    _refused(np.moveaxis(img, 0, 1)[:, :, :, :], ["red", "green", "blue"], stats)
    # reflectance in those statistics' units passes, even with every value of one band missing
    good = img / 10_000
    good[2] = np.nan
    report = _check(good, ["red", "green", "blue"], stats)
    assert report.ok and report.judged == ["red", "green"]


def test_statistics_without_units_and_wrong_shapes():
    img = np.full((2, 16, 16), 3000.0, dtype=np.float32)
    assert "no normalization" in _check(img, ["a", "b"], ([0, 0], [1, 1])).note
    with pytest.raises(GeoTiffError, match="got shape"):
        _check(img[None, None], ["a", "b"], ([0, 0], [1, 1]))
    with pytest.raises(GeoTiffError, match="2 band names"):
        _check(np.zeros((3, 3, 8, 8)), ["a", "b"], ([0, 0], [1, 1]))
    with pytest.raises(GeoTiffError, match="3 means"):
        _check(img, ["a", "b"], ([0, 0, 0], [1, 1, 1]))
    assert "nothing was judged" in _check(np.full((2, 4, 4), np.nan), ["a", "b"], ([0.1, 0.1], [0.1, 0.1])).note



def test_a_low_lying_float_dem_is_not_refused_but_the_ambiguity_is_said(caplog):
    """A float DEM of a delta (0..6 m) is 100x below DEM statistics, as a DEM in km over hills
    would be: the check warns naming both readings instead of refusing, and still refuses a
    wrong band beside it."""
    import logging

    rng = np.random.default_rng(0)
    dem = rng.uniform(0.2, 6.0, size=(1, 32, 32)).astype(np.float32)
    with caplog.at_level(logging.WARNING, logger="d2geo.data.units"):
        report = check_units(dem, band_names=["DEM:DEM"], mean=[670.0], std=[950.0], source="delta.tif")
    assert report.ok and len(report.warnings) == 1
    assert "kilometres" in report.warnings[0] and "low-lying" in caplog.text
    # a DN band beside it is still refused: the terrain rule does not switch the check off
    s2 = rng.uniform(500, 3000, size=(1, 32, 32)).astype(np.float32)
    with pytest.raises(UnitsError) as e:
        check_units(np.concatenate([dem, s2]), band_names=["DEM:DEM", "S2L2A:B04"], mean=[670.0, 0.1],
                    std=[950.0, 0.05], source="stack.tif")
    assert e.value.report.problems == {"dn_for_reflectance": ["S2L2A:B04"]}
