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
from helpers import UTM, write_tif  # noqa: E402
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
    # 10 projected metres are 10 cos(lat) ground metres (to the ellipsoid's 0.3 %)
    assert md["gsd"] == pytest.approx(10 * math.cos(math.radians(lat)), rel=5e-3)
    # geographic: 0.0001 deg pixels at 60 N
    g = write_tif(tmp_path / "g.tif", np.zeros((1, 2, 2), np.uint8), crs="EPSG:4326",
                  transform=from_origin(10.0 - 0.0001, 60.0 + 0.0001, 0.0001, 0.0001))
    md = read_geotiff(g).metadata
    np.testing.assert_allclose(md["latlon"], [60.0, 10.0], atol=1e-9)
    # ground metres on the WGS84 ellipsoid: meridional and prime-vertical radii of curvature
    a, e2, phi = 6378137.0, 0.0066943799901413165, math.radians(60.0)
    w = 1 - e2 * math.sin(phi) ** 2
    m_lat, m_lon = a * (1 - e2) / w ** 1.5, a / math.sqrt(w) * math.cos(phi)
    assert md["gsd"] == pytest.approx(math.radians(0.0001) * math.sqrt(m_lat * m_lon), rel=1e-4)


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
    # rasterio's tuple form reads the same pixels; anything else is refused naming both forms
    t = read_geotiff(p, window=((1, 6), (5, 10)))
    np.testing.assert_array_equal(t.image, read_geotiff(p, window=Window(5, 1, 5, 5)).image)
    assert t.valid[:, :3].all() and not t.valid[:, 3:].any()
    with pytest.raises(GeoTiffError, match="neither a rasterio Window"):
        read_geotiff(p, window=(5, -2, 5, 5))
    with pytest.raises(GeoTiffError, match="negative indexes"):
        read_geotiff(p, window=((-2, 3), (5, 10)))


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
    from d2geo.data.datasets import geojson_to_annotations

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


# ------------------------------------------------------------------ GDAL masks and labels
def _write_masked(path, data, mask, **kw):
    """A GeoTIFF whose validity is an internal per-dataset mask (as JPEG COGs carry)."""
    c, h, w = data.shape
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True):
        with rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=c, dtype=data.dtype.name,
                           crs=UTM, transform=from_origin(500_000, 4_000_000, 30, 30), **kw) as dst:
            dst.write(data)
            dst.write_mask(mask.astype(np.uint8) * 255)
    return str(path)


@pytest.mark.parametrize("compress", [None, "JPEG"])
def test_internal_mask_marks_pixels_invalid_in_images_and_labels(tmp_path, compress):
    rng = np.random.default_rng(0)
    data = rng.integers(10, 200, size=(3, 16, 16), dtype=np.uint8)
    mask = np.ones((16, 16), bool)
    mask[:4, :] = False  # a no-data margin, as a JPEG COG of a scene edge has
    kw = dict(compress="JPEG", photometric="YCBCR", tiled=True, blockxsize=16, blockysize=16) if compress else {}
    p = _write_masked(tmp_path / "m.tif", data, mask, **kw)
    s = read_geotiff(p, fill="zero")
    np.testing.assert_array_equal(s.valid, mask)
    assert (s.image[:, ~mask] == 0).all()
    # through a window reaching past the edge too
    sw = read_geotiff(p, window=Window(-2, 2, 8, 4))
    np.testing.assert_array_equal(sw.valid[:, 2:], mask[2:6, :6])
    labels = _write_masked(tmp_path / "l.tif", np.ones((1, 16, 16), np.uint8), mask)
    lab = read_label(labels)
    assert (lab[~mask] == 255).all() and (lab[mask] == 1).all()


def test_alpha_band_is_validity_not_data(tmp_path, caplog):
    rgb = np.full((3, 4, 4), 50, np.uint8)
    alpha = np.full((1, 4, 4), 255, np.uint8)
    alpha[0, 0, :] = 0
    p = write_tif(tmp_path / "rgba.tif", np.concatenate([rgb, alpha]))  # rasterio: RGB + alpha
    with rasterio.open(p) as src:
        assert src.colorinterp[3].name == "alpha"
    s = read_geotiff(p)
    assert s.image.shape == (3, 4, 4)
    assert not s.valid[0].any() and s.valid[1:].all()
    # a 4th 8-bit band that GDAL marked alpha but holds data (RGBN written with defaults)
    rgbn = np.concatenate([rgb, np.arange(16, dtype=np.uint8).reshape(1, 4, 4) + 1])
    q = write_tif(tmp_path / "rgbn.tif", rgbn)
    with caplog.at_level(logging.WARNING):
        s = read_geotiff(q)
    assert s.image.shape == (4, 4, 4) and s.valid.all()
    assert "marked alpha but hold values other than 0" in caplog.text


def _sample_and_label(tmp_path, label_kw):
    img = write_tif(tmp_path / "img.tif", np.ones((2, 8, 8), np.int16))
    kw = dict(transform=from_origin(500_000, 4_000_000, 30, 30))
    kw.update(label_kw)
    shape = kw.pop("shape", (8, 8))
    lab = write_tif(tmp_path / "lab.tif", np.zeros(shape, np.uint8), **kw)
    return img, lab


@pytest.mark.parametrize("label_kw,message", [
    (dict(transform=from_origin(500_000 + 30 * 3, 4_000_000, 30, 30)), r"origin .*off by \(3, 0\) pixels"),
    (dict(transform=from_origin(500_000, 4_000_000, 10, 10)), r"pixel size/rotation \(a, b, d, e\) \(10, 0, 0, -10\) vs \(30, 0, 0, -30\)"),
    (dict(crs="EPSG:32611"), r"its CRS is EPSG:32611, the image's EPSG:32610"),
    (dict(shape=(8, 9)), r"its shape is 8x9, the image's 8x8"),
])
def test_label_off_its_image_grid_is_refused(tmp_path, label_kw, message):
    from d2geo.data.geotiff import check_same_grid  # noqa: F401  (read_label(like=) uses it)
    from d2geo.data.mapper import GeoDatasetMapper

    img, lab = _sample_and_label(tmp_path, label_kw)
    sample = read_geotiff(img)
    with pytest.raises(GeoTiffError, match="lab.tif is not on the grid of its image .*" + message):
        read_label(lab, like=sample)
    with pytest.raises(GeoTiffError, match=message):
        GeoDatasetMapper(True, augmentations=[])({"file_name": img, "sem_seg_file_name": lab})


def test_label_on_its_image_grid_within_tolerance_is_read(tmp_path):
    img, lab = _sample_and_label(tmp_path, dict(transform=from_origin(500_000 + 1e-4, 4_000_000, 30, 30)))
    assert read_label(lab, like=read_geotiff(img)).shape == (8, 8)


# ------------------------------------------------------------------------ georeferencing
def test_crs_without_geotransform_drops_location(tmp_path, caplog):
    p = str(tmp_path / "nogt.tif")
    with pytest.warns(rasterio.errors.NotGeoreferencedWarning), \
            rasterio.open(p, "w", driver="GTiff", width=4, height=4, count=1, dtype="uint8", crs=UTM) as dst:
        dst.write(np.ones((1, 4, 4), np.uint8))
    with caplog.at_level(logging.WARNING):
        md = read_geotiff(p).metadata
    assert "latlon" not in md and "gsd" not in md
    assert "has a CRS but no geotransform" in caplog.text
    with pytest.raises(GeoTiffError, match="no geotransform"):
        read_geotiff(p, require_crs=True)


@pytest.mark.parametrize("name,tags,expected,source", [
    # the TIFF DateTime tag (file creation) loses to the date in the name
    ("S2_20190615_tile.tif", {"TIFFTAG_DATETIME": "2023:01:05 10:00:00"}, epoch(2019, 6, 15), "file name"),
    # on the name's date it gives the time of day
    ("T10SEG.2020245.tif", {"TIFFTAG_DATETIME": "2020:09:01 18:59:19"}, epoch(2020, 9, 1, 18, 59, 19),
     "time of day"),
    # acquisition tags win over the name
    ("S2_20190615_tile.tif", {"ACQUISITION_DATETIME": "2019-06-14T10:30:00Z"}, epoch(2019, 6, 14, 10, 30),
     "tag ACQUISITION_DATETIME"),
    ("S2_20190615_tile.tif", {"datetime": "2019-06-14T10:30:00.000000000"}, epoch(2019, 6, 14, 10, 30),
     "tag DATETIME"),
])
def test_acquisition_time_sources_in_order(tmp_path, caplog, monkeypatch, name, tags, expected, source):
    from d2geo.data import geotiff

    monkeypatch.setattr(geotiff.times, "_TIME_SOURCES_LOGGED", set())
    p = write_tif(tmp_path / name, np.zeros((1, 2, 2), np.uint8), tags=tags)
    with caplog.at_level(logging.INFO, logger="d2geo.data.geotiff"):
        assert read_geotiff(p).metadata["timestamps"][0] == expected
    assert "acquisition time from" in caplog.text and source in caplog.text


def test_tiff_datetime_alone_is_used_with_a_warning(tmp_path, caplog, monkeypatch):
    from d2geo.data import geotiff

    monkeypatch.setattr(geotiff.times, "_TIME_SOURCES_LOGGED", set())
    p = write_tif(tmp_path / "x.tif", np.zeros((1, 2, 2), np.uint8), tags={"TIFFTAG_DATETIME": "2020:09:01 18:59:19"})
    with caplog.at_level(logging.WARNING, logger="d2geo.data.geotiff"):
        read_geotiff(p)
    assert "when the file was made, often the processing time" in caplog.text


# ------------------------------------------------------------------------ multi-date bands
def test_dates_are_stacked_by_band_name(tmp_path):
    a = write_tif(tmp_path / "a_2020-01-01.tif", np.stack([np.full((2, 2), v, np.int16) for v in (1, 2, 3)]),
                  names=["B02", "B03", "B04"])
    b = write_tif(tmp_path / "b_2020-02-01.tif", np.stack([np.full((2, 2), v, np.int16) for v in (30, 10, 20)]),
                  names=["B04", "B02", "B03"])  # the same bands in another order
    s = read_geotiff([a, b])
    assert s.band_names == ("B02", "B03", "B04")
    assert s.image[:, :, 0, 0].tolist() == [[1, 10], [2, 20], [3, 30]]
    c = write_tif(tmp_path / "c_2020-03-01.tif", np.zeros((3, 2, 2), np.int16), names=["B02", "B03", "B05"])
    with pytest.raises(GeoTiffError, match=r"the dates name their bands differently: .*'B04' is not in"):
        read_geotiff([a, c])
    d = write_tif(tmp_path / "d_2020-04-01.tif", np.zeros((3, 2, 2), np.int16))  # no names
    with pytest.raises(GeoTiffError, match="the dates name their bands differently|hold different bands"):
        read_geotiff([a, d])
    with pytest.raises(GeoTiffError, match="hold different bands"):
        read_geotiff([d, a])
    # band_names= declares one order for every date: positional, as asked
    assert read_geotiff([d, a], band_names=["x", "y", "z"]).image.shape == (3, 2, 2, 2)


def test_sentinel2_ids_from_the_sensor_and_hls_names(tmp_path):
    data = np.stack([np.full((2, 2), i + 1, np.int16) for i in range(12)])
    p = write_tif(tmp_path / "l2a.tif", data)  # 12 bands, no descriptions
    with pytest.raises(GeoTiffError, match=r"'nir_narrow' is not in l2a.tif.*pass band_names=\[...\] or sensor="):
        read_geotiff(p, bands=["nir_narrow"])
    s = read_geotiff(p, bands=["blue", "green", "red", "nir_narrow", "swir_1", "swir_2"], sensor="sentinel-2-l2a")
    assert s.band_names == ("B02", "B03", "B04", "B8A", "B11", "B12")
    assert s.image[:, 0, 0].tolist() == [2, 3, 4, 9, 11, 12]
    np.testing.assert_allclose(s.metadata["wavelengths"], [0.493, 0.56, 0.665, 0.865, 1.61, 2.19], rtol=1e-6)
    assert read_geotiff(p, bands="rgb", sensor="sentinel-2-l2a").band_names == ("B04", "B03", "B02")
    ids = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12"]
    with pytest.raises(GeoTiffError, match="'nir' is ambiguous"):
        read_geotiff(p, bands=["nir"], band_names=ids)  # without a sensor, 'nir' could be B08 or B8A
    # descriptions that do not name bands (xarray writes the variable name to every band)
    q = write_tif(tmp_path / "x.tif", data, names=["bands"] * 12)
    assert read_geotiff(q, sensor="sentinel-2-l2a").band_names[8] == "B8A"


# ------------------------------------------------------------ property: ground GSD, location
_CRS_AREAS = {  # CRS: (lat range, lon range, metres per CRS unit for the pixel size drawn)
    "EPSG:32633": ((-60.0, 80.0), (12.5, 17.5), 1.0),     # UTM 33N
    "EPSG:32722": ((-75.0, 5.0), (-53.5, -48.5), 1.0),    # UTM 22S
    "EPSG:3857": ((-80.0, 80.0), (-179.0, 179.0), 1.0),   # Web Mercator
    "EPSG:4326": ((-85.0, 85.0), (-179.0, 179.0), None),  # degrees
    "EPSG:2227": ((36.5, 38.5), (-123.0, -120.5), 0.3048006096),  # California zone 3, US feet
}


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(crs=st.sampled_from(sorted(_CRS_AREAS)), u=st.floats(0, 1), v=st.floats(0, 1),
       size=st.floats(0.3, 300.0), h=st.integers(2, 12), w=st.integers(2, 12))
def test_gsd_and_location_are_ground_metres_and_wgs84_for_any_crs(tmp_path_factory, crs, u, v, size, h, w):
    from pyproj import Geod, Transformer

    (lat0, lat1), (lon0, lon1), unit = _CRS_AREAS[crs]
    lat, lon = lat0 + u * (lat1 - lat0), lon0 + v * (lon1 - lon0)
    to_crs = Transformer.from_crs("EPSG:4326", crs, always_xy=True)
    cx, cy = to_crs.transform(lon, lat)
    px = size / 111_000.0 if unit is None else size / unit  # pixel size in CRS units
    tr = from_origin(cx - px * w / 2, cy + px * h / 2, px, px)
    p = write_tif(tmp_path_factory.mktemp("g") / "g.tif", np.zeros((1, h, w), np.uint8), crs=crs, transform=tr)
    md = read_geotiff(p).metadata
    # reference: the tile's centre lines measured as WGS84 geodesics, divided by their pixel counts
    back = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    geod = Geod(ellps="WGS84")
    (xl, yl), (xr, yr) = back.transform(cx - px * w / 2, cy), back.transform(cx + px * w / 2, cy)
    (xt, yt), (xb, yb) = back.transform(cx, cy + px * h / 2), back.transform(cx, cy - px * h / 2)
    ground_x = geod.line_length([xl, lon, xr], [yl, lat, yr]) / w
    ground_y = geod.line_length([xt, lon, xb], [yt, lat, yb]) / h
    ref = math.sqrt(ground_x * ground_y)
    assert md["gsd"] == pytest.approx(ref, rel=0.01)
    assert md["latlon"][0] == pytest.approx(lat, abs=1e-6)
    assert abs((md["latlon"][1] - lon + 180) % 360 - 180) < 1e-6
