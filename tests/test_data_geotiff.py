"""GeoTIFF reading: bands, validity, scaling, time, location, windows, labels (real files)."""
from __future__ import annotations

import datetime as dt
import logging
import math

import numpy as np
import pytest

rasterio = pytest.importorskip("rasterio")
# d2geo.data is the detectron2 side of d2geo (its package imports detectron2's catalogs)
pytest.importorskip("detectron2", reason="detectron2 is not installed: see README for installing it from source")
from rasterio.transform import from_origin  # noqa: E402
from rasterio.windows import Window  # noqa: E402

from d2geo.data.geotiff import (  # noqa: E402
    GeoTiffError, apply_affine, parse_time, read_geotiff, read_label, time_from_filename,
)
from conftest import UTM, write_tif  # noqa: E402
from d2geo.encoders import band_wavelengths  # noqa: E402

def epoch(*args):
    return dt.datetime(*args, tzinfo=dt.timezone.utc).timestamp()


def test_select_bands_by_description_and_alias(tmp_path):
    data = np.stack([np.full((4, 5), v, np.float32) for v in (1, 2, 3, 4)])
    p = write_tif(tmp_path / "a.tif", data, names=["blue", "green", "red", "nir"])
    s = read_geotiff(p, bands=["red", "B02", "nir"], sensor="sentinel-2-l2a")
    assert s.image.shape == (3, 4, 5) and s.image.dtype == np.float32
    assert s.image[:, 0, 0].tolist() == [3, 1, 4]
    assert s.band_names == ("red", "blue", "nir")
    np.testing.assert_allclose(s.metadata["wavelengths"],
                               band_wavelengths("sentinel-2-l2a", ["red", "blue", "nir"]).numpy())
    with pytest.raises(GeoTiffError, match="band 'swir16' is not in"):
        read_geotiff(p, bands=["swir16"])


def test_band_names_given_when_file_has_none(tmp_path):
    p = write_tif(tmp_path / "a.tif", np.arange(3 * 4, dtype=np.uint8).reshape(3, 2, 2))
    assert read_geotiff(p).band_names == ("band1", "band2", "band3")
    s = read_geotiff(p, band_names=["x", "y", "z"], bands=["z", "x"])
    assert s.image[:, 0, 0].tolist() == [8, 0]
    with pytest.raises(GeoTiffError, match="3 bands per frame but 2 band names"):
        read_geotiff(p, band_names=["x", "y"])


def test_nodata_nan_valid_mask_and_fills(tmp_path):
    a = np.array([[[1, 2], [3, -9]], [[5, 6], [7, 8]]], np.int16)
    p = write_tif(tmp_path / "a.tif", a, nodata=-9)
    s = read_geotiff(p, fill="zero")
    assert s.valid.tolist() == [[True, True], [True, False]]
    assert s.image[:, 1, 1].tolist() == [0, 0]  # every band is filled where any band is invalid
    s = read_geotiff(p, fill="mean")
    np.testing.assert_allclose(s.image[:, 1, 1], [2.0, 6.0])  # mean of the valid pixels per band
    s = read_geotiff(p, fill=None)
    assert np.isnan(s.image[:, 1, 1]).all()
    assert read_geotiff(p, fill=-1.5).image[0, 1, 1] == -1.5
    # NaN in a float file without a nodata value
    f = np.ones((2, 3, 3), np.float32)
    f[1, 0, 2] = np.nan
    q = write_tif(tmp_path / "f.tif", f)
    s = read_geotiff(q)
    assert (~s.valid).sum() == 1 and not s.valid[0, 2] and np.isfinite(s.image).all()
    with pytest.raises(GeoTiffError, match="fill must be"):
        read_geotiff(q, fill="median")


def test_scale_from_file_tags_and_argument(tmp_path):
    a = np.full((2, 3, 3), 1234, np.uint16)
    p = write_tif(tmp_path / "s.tif", a, scales=(1e-4, 2e-4), offsets=(0.0, 0.1))
    np.testing.assert_allclose(read_geotiff(p).image[:, 0, 0], [0.1234, 0.1234 * 2 + 0.1], rtol=1e-6)
    q = write_tif(tmp_path / "t.tif", a, tags={"scale_factor": "0.0001"})
    np.testing.assert_allclose(read_geotiff(q).image[:, 0, 0], [0.1234, 0.1234], rtol=1e-6)
    np.testing.assert_allclose(read_geotiff(p, scale=0.01).image[:, 0, 0], [12.34, 12.34], rtol=1e-6)
    with pytest.raises(GeoTiffError, match="one per selected band"):
        read_geotiff(p, scale=[1, 2, 3])


@pytest.mark.parametrize("name,tags,expected", [
    ("x.tif", {"TIFFTAG_DATETIME": "2020:09:01 18:59:19"}, epoch(2020, 9, 1, 18, 59, 19)),
    ("x.tif", {"ACQUISITION_DATE": "2021-03-04T05:06:07Z"}, epoch(2021, 3, 4, 5, 6, 7)),
    ("x.tif", {"ACQUISITION_DATE": "2021-03-04T05:06:07+02:00"}, epoch(2021, 3, 4, 3, 6, 7)),
    ("HLS.S30.T10SEG.2020245T185919.v2.0.tif", {}, epoch(2020, 9, 1, 18, 59, 19)),
    ("subsetted_512x512_HLS.S30.T10SEH.2018190.v1.4_merged.tif", {}, epoch(2018, 7, 9)),
    ("S2_20190615_tile.tif", {}, epoch(2019, 6, 15)),
    ("scene_2019-06-15.tif", {}, epoch(2019, 6, 15)),
])
def test_acquisition_time(tmp_path, name, tags, expected):
    p = write_tif(tmp_path / name, np.zeros((1, 2, 2), np.uint8), tags=tags)
    ts = read_geotiff(p).metadata["timestamps"]
    assert ts.dtype == np.float64 and ts.shape == (1,)
    assert ts[0] == expected


def test_no_time_is_left_out_and_time_tag_is_strict(tmp_path):
    p = write_tif(tmp_path / "Bolivia_103757_S2Hand.tif", np.zeros((1, 2, 2), np.uint8))
    assert "timestamps" not in read_geotiff(p).metadata
    with pytest.raises(GeoTiffError, match="has no tag 'MY_TIME'"):
        read_geotiff(p, time_tag="MY_TIME")
    assert time_from_filename("tile_2019366.tif") is None  # 2019 has 365 days
    assert parse_time("2020-01-01") == epoch(2020, 1, 1)
    with pytest.raises(GeoTiffError, match="cannot parse"):
        parse_time("last tuesday")


def test_latlon_and_gsd_utm_web_mercator_geographic(tmp_path):
    # UTM 10N, tile centred on the central meridian (-123 deg)
    p = write_tif(tmp_path / "u.tif", np.zeros((1, 10, 10), np.uint8),
                  transform=from_origin(500_000 - 150, 4_000_000 + 150, 30, 30))
    md = read_geotiff(p).metadata
    assert md["latlon"][1] == pytest.approx(-123.0, abs=1e-9)
    assert 36.0 < md["latlon"][0] < 36.3 and md["gsd"] == pytest.approx(30.0)
    # Web Mercator: y = R ln tan(pi/4 + lat/2)
    r, lat, lon = 6378137.0, 48.0, 11.0
    x, y = r * math.radians(lon), r * math.log(math.tan(math.pi / 4 + math.radians(lat) / 2))
    q = write_tif(tmp_path / "m.tif", np.zeros((1, 4, 4), np.uint8), crs="EPSG:3857",
                  transform=from_origin(x - 20, y + 20, 10, 10))
    md = read_geotiff(q).metadata
    np.testing.assert_allclose(md["latlon"], [lat, lon], atol=1e-7)
    # geographic: 0.0001 deg pixels at 60 N
    g = write_tif(tmp_path / "g.tif", np.zeros((1, 2, 2), np.uint8), crs="EPSG:4326",
                  transform=from_origin(10.0 - 0.0001, 60.0 + 0.0001, 0.0001, 0.0001))
    md = read_geotiff(g).metadata
    np.testing.assert_allclose(md["latlon"], [60.0, 10.0], atol=1e-9)
    assert md["gsd"] == pytest.approx(0.0001 * 111_320 * math.sqrt(0.5), rel=1e-6)


def test_missing_crs_warns_or_raises(tmp_path, caplog):
    p = write_tif(tmp_path / "n.tif", np.zeros((1, 2, 2), np.uint8), crs=None)
    with caplog.at_level(logging.WARNING):
        md = read_geotiff(p).metadata
    assert "latlon" not in md and "gsd" not in md
    assert "has no CRS" in caplog.text
    with pytest.raises(GeoTiffError, match="has no CRS"):
        read_geotiff(p, require_crs=True)


def test_time_series_from_files_and_from_one_stacked_file(tmp_path):
    names = ["blue", "red"]
    files = []
    for t, doy in enumerate((100, 130, 160)):
        files.append(write_tif(tmp_path / f"T10SEG.2020{doy:03d}.tif",
                               np.full((2, 3, 4), 10 * t + np.array([1, 2])[:, None, None], np.int16), names=names))
    s = read_geotiff(files, bands=["red"])
    assert s.image.shape == (1, 3, 3, 4)
    assert s.image[0, :, 0, 0].tolist() == [2, 12, 22]
    assert (np.diff(s.metadata["timestamps"]) == 30 * 86400).all()
    # one file holding three dates, time-major, times in the TIMESTAMPS tag
    stacked = np.concatenate([np.full((2, 3, 4), 10 * t + np.array([1, 2])[:, None, None], np.int16)
                              for t in range(3)])
    q = write_tif(tmp_path / "stack.tif", stacked, names=names * 3,
                  tags={"TIMESTAMPS": "2020-04-09,2020-05-09,2020-06-08"})
    s2 = read_geotiff(q, num_frames=3, bands=["red"])
    np.testing.assert_array_equal(s2.image, s.image)
    np.testing.assert_array_equal(s2.metadata["timestamps"], s.metadata["timestamps"])
    with pytest.raises(GeoTiffError, match="not a multiple of num_frames"):
        read_geotiff(q, num_frames=4)
    other = write_tif(tmp_path / "other.tif", np.zeros((2, 3, 5), np.int16), names=names)
    with pytest.raises(GeoTiffError, match="share one grid"):
        read_geotiff([files[0], other])
    moved = write_tif(tmp_path / "moved.tif", np.zeros((2, 3, 4), np.int16), names=names,
                      transform=from_origin(600_000, 4_000_000, 30, 30))
    with pytest.raises(GeoTiffError, match="another CRS/transform"):
        read_geotiff([files[0], moved])


def test_window_past_the_edge_is_invalid_and_georeferenced(tmp_path):
    a = np.arange(1, 1 + 2 * 6 * 8, dtype=np.int16).reshape(2, 6, 8)
    p = write_tif(tmp_path / "w.tif", a)
    s = read_geotiff(p, window=Window(5, -2, 5, 5))
    assert s.image.shape == (2, 5, 5)
    expected_valid = np.zeros((5, 5), bool)
    expected_valid[2:, :3] = True
    np.testing.assert_array_equal(s.valid, expected_valid)
    np.testing.assert_array_equal(s.image[:, 2:, :3], a[:, :3, 5:8])
    assert s.transform.c == 500_000 + 5 * 30 and s.transform.f == 4_000_000 + 2 * 30


def test_read_label_maps_nodata_and_invalid(tmp_path):
    lab = np.array([[0, 1, -1], [1, 0, 1]], np.int16)
    p = write_tif(tmp_path / "l.tif", lab)
    with pytest.raises(GeoTiffError, match="label_map"):
        read_label(p)
    out = read_label(p, label_map={-1: 255}, invalid=np.array([[False, False, False], [True, False, False]]))
    assert out.dtype == np.uint8
    assert out.tolist() == [[0, 1, 255], [255, 0, 1]]
    q = write_tif(tmp_path / "m.tif", np.array([[0, 7], [2, 1]], np.uint8), nodata=7)
    assert read_label(q).tolist() == [[0, 255], [2, 1]]


def test_geojson_to_annotations_maps_scene_coords_to_pixels(tmp_path):
    pytest.importorskip("detectron2", reason="detectron2 is not installed: see README for installing it from source")
    from d2geo.data.geotiff import geojson_to_annotations

    tr = from_origin(500_000, 4_000_000, 10, 10)
    xs, ys = apply_affine(tr, [2, 6, 6, 2, 2], [3, 3, 8, 8, 3])
    ring = list(zip(xs.tolist(), ys.tolist()))
    gj = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"category_id": "building"},
         "geometry": {"type": "Polygon", "coordinates": [[list(p) for p in ring]]}}]}
    (anno,) = geojson_to_annotations(gj, tr, class_names=["building"])
    np.testing.assert_allclose(anno["bbox"], [2, 3, 6, 8])
    assert anno["category_id"] == 0
    # the same polygon given in EPSG:4326 is reprojected to the scene CRS first
    from rasterio.warp import transform_geom
    g4326 = transform_geom(UTM, "EPSG:4326", gj["features"][0]["geometry"])
    gj2 = {"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {"category_id": 0},
                                                      "geometry": g4326}]}
    (anno2,) = geojson_to_annotations(gj2, tr, crs=UTM, geojson_crs="EPSG:4326")
    np.testing.assert_allclose(anno2["bbox"], [2, 3, 6, 8], atol=1e-3)


# ---------------------------------------------------------------------------- fuzzing
from hypothesis import HealthCheck, given, settings  # a test dependency (setup.py extras 'test')
from hypothesis import strategies as st


@settings(max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(c=st.integers(1, 4), h=st.integers(1, 9), w=st.integers(1, 9),
       dtype=st.sampled_from(["uint8", "uint16", "int16", "int32", "float32", "float64"]),
       use_nodata=st.booleans(), seed=st.integers(0, 2**16), fill=st.sampled_from(["zero", "mean", 3.0]))
def test_fuzz_reader_validity_and_values(tmp_path_factory, c, h, w, dtype, use_nodata, seed, fill):
    rng = np.random.default_rng(seed)
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else None
    lo, hi = (info.min, min(info.max, 10_000)) if info else (-1e3, 1e3)
    data = rng.uniform(max(lo, -1e3), hi, size=(c, h, w)).astype(dtype)
    nodata = None
    bad = rng.random((c, h, w)) < 0.2
    if use_nodata:
        nodata = 0 if info is not None and info.min == 0 else -1
        data[data == nodata] = nodata + 1 if info else nodata + 0.5
        data[bad] = nodata
    elif np.dtype(dtype).kind == "f":
        data[bad] = np.nan
    else:
        bad[:] = False
    p = write_tif(tmp_path_factory.mktemp("fz") / "f.tif", data, nodata=nodata)
    s = read_geotiff(p, fill=fill)
    valid = ~bad.any(0)
    assert s.image.shape == (c, h, w) and s.image.dtype == np.float32
    np.testing.assert_array_equal(s.valid, valid)
    assert np.isfinite(s.image).all()
    np.testing.assert_allclose(s.image[:, valid], data[:, valid].astype(np.float64), rtol=1e-6)
    if not valid.all():
        if fill == "zero":
            assert (s.image[:, ~valid] == 0).all()
        elif fill == 3.0:
            assert (s.image[:, ~valid] == 3.0).all()
        elif valid.any():
            np.testing.assert_allclose(s.image[:, ~valid][:, 0], data[:, valid].astype(np.float64).mean(1),
                                       rtol=1e-5)


@settings(max_examples=30, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(h=st.integers(1, 12), w=st.integers(1, 12), row=st.integers(-8, 14), col=st.integers(-8, 14),
       wh=st.integers(1, 10), ww=st.integers(1, 10), seed=st.integers(0, 2**16))
def test_fuzz_windows_against_numpy_padding(tmp_path_factory, h, w, row, col, wh, ww, seed):
    rng = np.random.default_rng(seed)
    data = rng.integers(1, 1000, size=(2, h, w)).astype(np.int16)
    data[:, rng.random((h, w)) < 0.2] = -5
    p = write_tif(tmp_path_factory.mktemp("win") / "w.tif", data, nodata=-5)
    s = read_geotiff(p, window=Window(col, row, ww, wh), fill="zero")
    # expected: the raster padded with nodata far enough, then sliced
    pad = 30  # > the largest offset + window size
    big = np.full((2, h + 2 * pad, w + 2 * pad), -5, np.int16)
    big[:, pad:pad + h, pad:pad + w] = data
    exp = big[:, pad + row:pad + row + wh, pad + col:pad + col + ww]
    assert s.image.shape == (2, wh, ww)
    np.testing.assert_array_equal(s.valid, (exp != -5).all(0))
    np.testing.assert_array_equal(s.image, np.where(exp != -5, exp, 0).astype(np.float32) * s.valid)
    assert s.transform.c == 500_000 + 30 * col and s.transform.f == 4_000_000 - 30 * row
