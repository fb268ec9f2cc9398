"""Bad input: the cases of docs/bad_inputs.md that other test files do not cover, a
hypothesis fuzz of GeoDatasetMapper and of corrupt GeoTIFFs, and a check that every row
of the table names a test that exists."""
from __future__ import annotations

import ast
import json
import logging
import os
import re

import numpy as np
import pytest
import torch

pytest.importorskip("detectron2", reason="detectron2 is not installed: see README for installing it from source")
rasterio = pytest.importorskip("rasterio")

import detectron2.data.transforms as T  # noqa: E402
from detectron2.config import LazyCall as L  # noqa: E402
from detectron2.config import instantiate  # noqa: E402
from detectron2.utils.events import EventStorage  # noqa: E402

from d2geo.data.datasets import geojson_to_annotations  # noqa: E402
from d2geo.data.geotiff import IGNORE_LABEL, GeoTiffError, read_geotiff, read_label  # noqa: E402
from d2geo.data.mapper import GeoDatasetMapper  # noqa: E402
from d2geo.encoders import CheckpointError, EncoderInputError, build_encoder  # noqa: E402
from d2geo.modeling import GeoBackbone, SimpleFeaturePyramid  # noqa: E402
from helpers import dino_backbone, tiny_mask_rcnn, tiny_segmentor, write_tif  # noqa: E402
from helpers import make_sample as _sample  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join(ROOT, "docs", "bad_inputs.md")
#: encoders are the families' tiny registered test variants (``<family>_test``), with fewer blocks
#: where the check runs before any block

try:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
except ImportError:  # only the fuzz tests are skipped
    given = settings = st = HealthCheck = None


def fuzz(**strategies):
    """``@given`` with this file's settings, or a skip when hypothesis is not installed."""
    def wrap(f):
        if given is None:
            return pytest.mark.skip(reason="hypothesis is not installed (pip install hypothesis)")(f)
        return settings(max_examples=40, deadline=None, database=None,
                        suppress_health_check=[HealthCheck.function_scoped_fixture])(
            given(**{k: v() for k, v in strategies.items()})(f))
    return wrap


pytestmark = pytest.mark.usefixtures("one_thread")


# -- pixels ---------------------------------------------------------------------------------
def test_non_finite_pixels_are_refused_by_the_model():
    model = tiny_segmentor(SimpleFeaturePyramid(dino_backbone(), out_channels=32), num_bands=5).eval()
    good = _sample(H=32, W=32)
    bad = _sample(H=32, W=32, seed=1)
    bad["image"][2, 3, 4] = float("nan")
    bad["image"][0, 0, :2] = float("inf")
    bad["file_name"] = "tile_7.tif"
    with torch.no_grad():
        model([good])  # finite input runs
        with pytest.raises(EncoderInputError, match=r"sample 1 of the batch \(tile_7.tif\) has 3 NaN/inf pixel values"):
            model([good, bad])
    model.train()
    with pytest.raises(EncoderInputError, match="GeoDatasetMapper does it"):
        model([bad])
    ints = dict(good, image=good["image"].to(torch.int32))  # integer images are always finite
    with torch.no_grad():
        model.eval()([ints])


def test_values_that_overflow_when_scaled_are_invalid_and_filled(tmp_path):
    data = np.full((2, 4, 5), 100.0)
    data[1, 2, 3] = 1e300  # finite in the file, inf as float32
    s = read_geotiff(write_tif(tmp_path / "f64.tif", data.astype("float64")))
    assert np.isfinite(s.image).all() and not s.valid[2, 3] and s.valid.sum() == 19
    assert (s.image[:, 2, 3] == 0).all()
    ints = np.full((1, 3, 3), 60000, dtype="uint16")
    s = read_geotiff(write_tif(tmp_path / "u16.tif", ints), scale=1e34)  # 6e38 > float32 max
    assert not s.valid.any() and np.isfinite(s.image).all()


def test_complex_geotiff_is_refused(tmp_path):
    data = (np.ones((1, 4, 4)) + 1j).astype("complex64")
    with pytest.raises(GeoTiffError, match="complex values .* convert them to real bands"):
        read_geotiff(write_tif(tmp_path / "slc.tif", data))


# -- corrupt files ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiled_tif(tmp_path_factory):
    path = tmp_path_factory.mktemp("corrupt") / "tiled.tif"
    data = np.random.default_rng(0).integers(0, 3000, (3, 64, 64)).astype("uint16")
    with rasterio.open(path, "w", driver="GTiff", width=64, height=64, count=3, dtype="uint16",
                       crs="EPSG:32610", transform=rasterio.transform.from_origin(500_000, 4e6, 10, 10),
                       compress="deflate", tiled=True, blockxsize=16, blockysize=16) as dst:
        dst.write(data)
    return str(path), open(path, "rb").read(), data


def test_truncated_or_garbage_geotiffs_name_the_file_and_the_fix(tiled_tif, tmp_path):
    _, raw, _ = tiled_tif
    cut = tmp_path / "cut.tif"
    cut.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(GeoTiffError, match=r"cut.tif could not be read as a GeoTIFF .*truncated or corrupt"):
        read_geotiff(str(cut))
    with pytest.raises(GeoTiffError, match="truncated or corrupt"):
        read_label(str(cut))
    with pytest.raises(GeoTiffError, match="cut.tif could not be read"):
        GeoDatasetMapper(True, augmentations=[])({"file_name": str(cut)})
    junk = tmp_path / "junk.tif"
    junk.write_bytes(b"<html>404 not found</html>" * 20)
    with pytest.raises(GeoTiffError, match="junk.tif could not be read as a GeoTIFF"):
        read_geotiff(str(junk))


@fuzz(cut=lambda: st.floats(0.0, 1.0), flips=lambda: st.lists(st.tuples(st.floats(0.0, 1.0), st.integers(0, 255)),
                                                                max_size=8), truncate=lambda: st.booleans())
def test_fuzz_corrupt_geotiffs_read_fully_or_raise_geotiff_error(tiled_tif, tmp_path_factory, cut, flips, truncate):
    """A damaged file either reads to a well-formed sample or raises GeoTiffError: never a
    GDAL/rasterio exception, a crash or a wrongly shaped array. (TIFF has no checksums: a
    flipped byte inside compressed pixel data can decode to other values unnoticed.)"""
    _, raw, _ = tiled_tif
    data = bytearray(raw)
    for where, value in flips:
        data[int(where * (len(data) - 1))] = value
    if truncate:
        data = data[: int(cut * len(data))]
    path = tmp_path_factory.mktemp("fz") / "damaged.tif"
    path.write_bytes(bytes(data))
    try:
        s = read_geotiff(str(path))
    except GeoTiffError as e:
        assert "damaged.tif" in str(e)
        return
    assert s.image.ndim == 3 and s.image.dtype == np.float32 and np.isfinite(s.image).all()
    assert s.valid.shape == s.image.shape[1:]


# -- metadata: a GeoTIFF without a CRS feeding a model that needs the GSD ---------------------
def test_missing_crs_leaves_gsd_out_and_clay_asks_for_it(tmp_path, caplog):
    bands = ["red", "green", "blue", "nir"]
    data = np.random.default_rng(1).integers(1, 255, (4, 16, 16)).astype("uint8")
    no_crs = write_tif(tmp_path / "no_crs.tif", data, crs=None)
    with_crs = write_tif(tmp_path / "utm.tif", data)
    mapper = GeoDatasetMapper(False, augmentations=[], bands=bands, sensor="naip")
    with caplog.at_level(logging.WARNING):
        d = mapper({"file_name": no_crs, "geo": {"band_names": bands}})
    assert "has no CRS" in caplog.text
    assert set(d["metadata"]) == {"wavelengths"}
    clay = build_encoder("clay_test", depth=1).eval()
    x = d["image"][None]
    md = {k: v for k, v in d["metadata"].items()}
    with pytest.raises(EncoderInputError, match="Clay needs the ground sample distance: pass metadata"):
        clay(x, metadata=md)
    d = mapper({"file_name": with_crs, "geo": {"band_names": bands}})
    md = {k: (v[None] if k in ("latlon",) else v) for k, v in d["metadata"].items()}
    md["gsd"] = torch.tensor([md["gsd"]])
    with torch.no_grad():
        assert clay(d["image"][None], metadata=md).shape == (1, 72, 2, 2)
    with pytest.raises(GeoTiffError, match="reprojecting GeoJSON needs the scene CRS"):
        geojson_to_annotations({"type": "FeatureCollection", "features": []},
                               read_geotiff(no_crs).transform, crs=None, geojson_crs="EPSG:4326")


# -- sizes ------------------------------------------------------------------------------------
def test_images_smaller_than_one_patch_are_padded_not_cropped():
    enc = build_encoder("dinov2_test", depth=1, patch_size=16, img_size=32)
    with pytest.raises(EncoderInputError, match="input size 8x8 is not a positive multiple of the patch size 16"):
        enc(torch.randn(1, 3, 8, 8))
    seg = tiny_segmentor(SimpleFeaturePyramid(dino_backbone(), out_channels=32), num_bands=5)
    tiny = _sample(H=5, W=7)
    with torch.no_grad():
        out = seg.eval()([tiny])
    assert out[0]["sem_seg"].shape == (3, 5, 7)  # predictions at the input size
    losses = seg.train()([tiny])
    assert torch.isfinite(losses["loss_sem_seg"])
    rcnn = tiny_mask_rcnn().eval()
    with torch.no_grad():
        inst = rcnn([{"image": tiny["image"]}])[0]["instances"]
    assert inst.image_size == (5, 7)
    if len(inst):
        boxes = inst.pred_boxes.tensor
        assert (boxes[:, 2] <= 7).all() and (boxes[:, 3] <= 5).all()


# -- annotations ------------------------------------------------------------------------------
def test_empty_annotations_train_as_background(tmp_path):
    data = np.random.default_rng(2).integers(1, 3000, (5, 32, 32)).astype("uint16")
    path = write_tif(tmp_path / "empty.tif", data)
    mapper = GeoDatasetMapper(True, augmentations=[T.RandomFlip()], use_instance_mask=True)
    d = mapper({"file_name": path, "annotations": []})
    assert len(d["instances"]) == 0 and d["instances"].gt_boxes.tensor.shape == (0, 4)
    gj = mapper({"file_name": path, "geojson_file_name": _write_json(tmp_path / "none.geojson",
                                                                     {"type": "FeatureCollection", "features": []})})
    assert len(gj["instances"]) == 0
    model = tiny_mask_rcnn().train()
    with EventStorage():
        losses = model([d])
        assert all(torch.isfinite(v) for v in losses.values())
        assert losses["loss_box_reg"] == 0 and losses["loss_mask"] == 0  # nothing but background
        mixed = model([d, dict(_sample(H=32, W=32, n_boxes=1), metadata=d["metadata"])])
    assert mixed["loss_box_reg"] > 0


def _write_json(path, obj):
    path.write_text(json.dumps(obj))
    return str(path)


def test_training_dicts_without_targets_are_named():
    rcnn = tiny_mask_rcnn().train()
    with_targets, without = _sample(), {"image": _sample()["image"]}
    with EventStorage(), pytest.raises(EncoderInputError, match=r"training needs 'instances' in every dataset "
                                                                r"dict, but samples \[1\] .*'annotations' \(an empty list"):
        rcnn([with_targets, without])
    seg = tiny_segmentor(SimpleFeaturePyramid(dino_backbone(), out_channels=32), num_bands=5).train()
    with pytest.raises(EncoderInputError, match=r"'sem_seg' .*samples \[0\] .*sem_seg_file_name"):
        seg([without])


# -- configs naming unknown things ------------------------------------------------------------
def test_config_with_unknown_encoder_or_band(tmp_path, caplog):
    with pytest.raises(KeyError, match=r"unknown encoder 'dinov2_vitb15'\. Did you mean dinov2_vitb14"):
        instantiate(L(GeoBackbone)(encoder="dinov2_vitb15"))
    # a misspelt pretrained band would start at zero: warned, with the likely band
    rgb = build_encoder("dinov2_test", depth=1).vit.state_dict()
    with caplog.at_level(logging.WARNING, logger="d2geo.encoders.adapt"):
        enc = build_encoder("dinov2_test", depth=1, weights=rgb,
                            bands=["red", "green", "bleu", "nir"])
    assert "did you mean 'blue' for 'bleu'?" in caplog.text
    assert enc.vit.patch_embed.proj.weight[:, 2].abs().sum() == 0
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="d2geo.encoders.adapt"):
        build_encoder("dinov2_test", depth=1, weights=rgb, bands=["red", "nir"])
    assert "did you mean" not in caplog.text  # new bands that are no typo start at zero quietly
    with pytest.raises(KeyError, match="unknown band 'bleu' for naip"):
        build_encoder("clay_test", depth=1, sensor="naip", bands=["red", "green", "bleu"])
    path = write_tif(tmp_path / "four.tif", np.ones((4, 8, 8), dtype="uint8"),
                     names=["red", "green", "blue", "nir"])
    with pytest.raises(GeoTiffError, match=r"band 'swir16' is not in four.tif; its bands are \['red'"):
        GeoDatasetMapper(True, augmentations=[], bands=["red", "swir16"])({"file_name": path})
    with pytest.raises(GeoTiffError, match="unknown sensor 'sentinel2'"):
        read_geotiff(path, sensor="sentinel2")


def test_checkpoint_made_for_other_bands_is_explained():
    four = build_encoder("dinov2_test", depth=1,
                         bands=["red", "green", "blue", "nir"]).vit.state_dict()
    with pytest.raises(CheckpointError, match="4 input bands but the pretrained band list has 3 .*RGB.*"
                                              "train.init_checkpoint"):
        build_encoder("dinov2_test", depth=1, weights=four)


# -- fuzzing the mapper -----------------------------------------------------------------------
_DTYPES = ["uint8", "int8", "uint16", "int16", "uint32", "int32", "float32", "float64"]


@fuzz(c=lambda: st.integers(1, 4), h=lambda: st.integers(1, 24), w=lambda: st.integers(1, 24),
      dtype=lambda: st.sampled_from(_DTYPES), nodata_kind=lambda: st.sampled_from(["none", "value", "nan"]),
      specials=lambda: st.booleans(), augment=lambda: st.sampled_from(["none", "flip", "resize", "crop"]),
      with_label=lambda: st.booleans(), seed=lambda: st.integers(0, 2**16))
def test_fuzz_mapper_over_shapes_dtypes_and_nodata(tmp_path_factory, c, h, w, dtype, nodata_kind, specials,
                                                   augment, with_label, seed):
    """Whatever the file holds, the mapper hands the model a finite float32 (C, H', W') image,
    labels that ignore exactly the invalid pixels, and metadata of the right shapes."""
    rng = np.random.default_rng(seed)
    is_float = np.dtype(dtype).kind == "f"
    if is_float:
        data = rng.normal(0, 1e3, (c, h, w)).astype(dtype)
    else:
        info = np.iinfo(dtype)
        data = rng.integers(max(info.min, -5000), min(info.max, 5000), (c, h, w), endpoint=True).astype(dtype)
    bad = rng.random((c, h, w)) < 0.25
    nodata = None
    if nodata_kind == "value":
        nodata = 7
        data[data == nodata] = 8
        data[bad] = nodata
    elif nodata_kind == "nan" and is_float:
        nodata = float("nan")
        data[bad] = np.nan
    else:
        bad[:] = False
    if specials and is_float:  # NaN, inf and float32 overflows without any nodata declared
        extra = rng.random((c, h, w)) < 0.1
        # 1e300 is finite in a float64 file but inf once read as float32
        choices = [np.nan, np.inf, -np.inf] + ([1e300, -1e300] if dtype == "float64" else [])
        data[extra] = rng.choice(choices, size=int(extra.sum()))
        bad |= extra
    invalid = bad.any(0)
    folder = tmp_path_factory.mktemp("mfz")
    d = {"file_name": write_tif(folder / "img.tif", data, nodata=nodata)}
    if with_label:
        labels = rng.integers(0, 4, (h, w)).astype("uint8")
        d["sem_seg_file_name"] = write_tif(folder / "lab.tif", labels)
    augs = {"none": [], "flip": [T.RandomFlip(prob=1.0)], "resize": [T.Resize((2 * h, w + 3))],
            "crop": [T.RandomCrop("absolute", (max(1, h // 2), max(1, w // 2)))]}[augment]
    out = GeoDatasetMapper(True, augmentations=augs)(d)

    image = out["image"]
    assert image.dtype == torch.float32 and image.ndim == 3 and image.shape[0] == c
    assert torch.isfinite(image).all()
    nh, nw = image.shape[1:]
    expected = {"none": (h, w), "flip": (h, w), "resize": (2 * h, w + 3),
                "crop": (max(1, h // 2), max(1, w // 2))}[augment]
    assert (nh, nw) == expected  # the size the augmentation asked for: never a silent crop
    if augment in ("none", "flip"):
        ref = np.where(invalid, 0.0, data.astype(np.float64))
        ref = ref[:, :, ::-1] if augment == "flip" else ref
        np.testing.assert_allclose(image.numpy(), ref.astype(np.float32), rtol=1e-6, atol=0)
    if with_label:
        sem = out["sem_seg"]
        assert sem.shape == (nh, nw) and sem.dtype == torch.int64
        if augment in ("none", "flip"):
            inv = invalid[:, ::-1] if augment == "flip" else invalid
            lab = labels[:, ::-1] if augment == "flip" else labels
            assert ((sem == IGNORE_LABEL).numpy() == inv).all()
            assert (sem.numpy()[~inv] == lab[~inv]).all()
        else:
            assert set(np.unique(sem.numpy())) <= {0, 1, 2, 3, IGNORE_LABEL}
    md = out["metadata"]
    assert md["latlon"].shape == (2,) and md["gsd"] > 0


# -- the table in docs/bad_inputs.md names tests that exist -----------------------------------
def _test_ids(markdown: str) -> list[tuple[str, str]]:
    return re.findall(r"(tests/(?:\w+/)*test_\w+\.py)::(test_\w+)", markdown)


def _functions(path: str) -> set[str]:
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    return {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}


def test_every_table_row_names_an_existing_test():
    with open(DOC, encoding="utf-8") as f:
        text = f.read()
    rows = [line for line in text.splitlines() if line.startswith("|") and not set(line) <= set("|-: ")]
    body = rows[1:]  # the header row names no test
    assert len(body) >= 14
    for row in body:
        assert _test_ids(row), f"a row without a test: {row[:100]}"
    missing = []
    cache: dict[str, set[str]] = {}
    for path, name in _test_ids(text):
        full = os.path.join(ROOT, path)
        if not os.path.isfile(full):
            missing.append(f"{path} (no such file)")
            continue
        if name not in cache.setdefault(path, _functions(full)):
            missing.append(f"{path}::{name}")
    assert not missing, f"docs/bad_inputs.md names tests that do not exist: {missing}"
    for topic in ("band count", "tubelet", "metadata", "multiple of the patch", "smaller than one patch",
                  "NaN", "truncated", "CRS", "empty annotations", "wavelengths", "another model",
                  "pickled", "unknown encoder", "unknown band"):
        assert topic.lower() in text.lower(), f"the table does not cover {topic!r}"


def test_one_pixel_wide_image_survives_a_flip(tmp_path):
    """Found by the mapper fuzz: a flipped axis of length 1 kept a negative stride that torch refuses."""
    path = write_tif(tmp_path / "column.tif", np.arange(5, dtype="uint16").reshape(1, 5, 1) + 1)
    out = GeoDatasetMapper(True, augmentations=[T.RandomFlip(prob=1.0)])({"file_name": path})
    assert out["image"].shape == (1, 5, 1) and out["image"][0, :, 0].tolist() == [1, 2, 3, 4, 5]
    out = GeoDatasetMapper(True, augmentations=[T.RandomFlip(prob=1.0, horizontal=False, vertical=True)])(
        {"file_name": path})
    assert out["image"][0, :, 0].tolist() == [5, 4, 3, 2, 1]


# -- metadata and input dtypes ------------------------------------------------------------------
def _utc(*args):
    import datetime as dt

    return dt.datetime(*args, tzinfo=dt.timezone.utc).timestamp()


def _tl_prithvi(**kw):
    enc = build_encoder("prithvi_test", depth=2, patch_size=16, img_size=32, num_frames=1,
                        **kw).eval()
    with torch.no_grad():  # the coordinate scales start at 0.1: make the encodings matter
        enc.temporal_embed_enc.scale.fill_(1.0)
        enc.location_embed_enc.scale.fill_(1.0)
    return enc


def test_float32_timestamps_are_refused_with_the_fix():
    from d2geo.encoders.prithvi import timestamps_to_year_doy

    late = _utc(2022, 9, 7, 23, 59, 30)  # day 250
    as_f32 = torch.tensor([[late]])  # torch's default dtype
    assert timestamps_to_year_doy(as_f32.double()).tolist() == [[[2022.0, 251.0]]]  # what float32 does
    enc = _tl_prithvi()
    x = torch.randn(1, 6, 1, 32, 32)
    fix = r"float64: torch.tensor\(\.\.\., dtype=torch.float64\)"
    with pytest.raises(EncoderInputError, match=r"metadata 'timestamps' are float32, .*next day.*" + fix):
        enc.forward_features(x, metadata={"timestamps": as_f32})
    with pytest.raises(EncoderInputError, match="are float32"):  # NumPy too
        enc.forward_features(x, metadata={"timestamps": np.array([[late]], dtype=np.float32)})
    with pytest.raises(EncoderInputError, match="are bfloat16"):
        enc.forward_features(x, metadata={"timestamps": torch.tensor([[late]], dtype=torch.bfloat16)})
    with torch.no_grad():  # float64 and integer seconds (exact) are accepted, and agree
        a = enc.forward_features(x, metadata={"timestamps": torch.tensor([[late]], dtype=torch.float64)})[0]
        b = enc.forward_features(x, metadata={"timestamps": torch.tensor([[int(late)]])})[0]
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    # the same through a meta-architecture (the dataset dict of a hand-written mapper)
    seg = tiny_segmentor(SimpleFeaturePyramid(dino_backbone(), out_channels=32), num_bands=5).eval()
    sample = _sample(H=32, W=32)
    sample["metadata"]["timestamps"] = torch.tensor([late])
    with torch.no_grad(), pytest.raises(EncoderInputError, match=r"sample 0: metadata 'timestamps' are float32.*" + fix):
        seg([sample])


@pytest.mark.parametrize("value,hint", [
    (250.0, "day number"),  # day of year
    (19242.0, "day number"),  # days since the epoch
    (2022250.0, "date digits"),  # YYYYDDD
    (20220907.0, "date digits"),  # YYYYMMDD
    (1662595170000.0, "milliseconds"),
    (1662595170000000000.0, "nanoseconds"),
    (-1.0, ""),
    (5e9, ""),  # 2128
])
@pytest.mark.parametrize("family", ["prithvi", "clay"])
def test_timestamps_in_other_units_are_refused(family, value, hint):
    if family == "prithvi":
        enc, x, md = _tl_prithvi(), torch.randn(1, 6, 1, 32, 32), {}
    else:
        enc = build_encoder("clay_test", depth=1).eval()
        x, md = torch.randn(1, 3, 16, 16), {"wavelengths": [0.665, 0.56, 0.49], "gsd": [10.0]}
    md["timestamps"] = torch.tensor([[value]], dtype=torch.float64)
    with pytest.raises(EncoderInputError, match=r"outside 1972-01-01 \.\. 2100-01-01 .*" + hint
                       + r".*pass seconds since the Unix epoch \(UTC\) as float64"):
        enc.forward_features(x, metadata=md)


def test_mapper_and_reader_give_float64_seconds(tmp_path):
    path = write_tif(tmp_path / "tile.tif", np.ones((3, 16, 16), dtype="uint16"))
    late = _utc(2022, 9, 7, 23, 59, 30)
    mapper = GeoDatasetMapper(False, augmentations=[])
    out = mapper({"file_name": path, "geo": {"timestamps": ["2022-09-07T23:59:30Z"]}})
    ts = out["metadata"]["timestamps"]
    assert ts.dtype == torch.float64 and ts.tolist() == [late]
    read = read_geotiff(path, timestamps=["2022-09-07T23:59:30Z"]).metadata["timestamps"]
    assert read.dtype == np.float64 and read.tolist() == [late]
    with pytest.raises(EncoderInputError, match=r"the timestamps of .*tile.tif holds 250, .*day number"):
        mapper({"file_name": path, "geo": {"timestamps": [250]}})


def test_real_tiles_give_float64_epoch_seconds(terramind_examples):
    import glob

    from d2geo.encoders.metadata import TIMESTAMP_MAX, TIMESTAMP_MIN

    mapper = GeoDatasetMapper(False, augmentations=[])
    dated = 0
    for path in sorted(glob.glob(os.path.join(terramind_examples, "*", "*.tif"))):
        ts = mapper({"file_name": path})["metadata"].get("timestamps")
        if ts is not None:  # files without a date leave it out
            assert ts.dtype == torch.float64 and TIMESTAMP_MIN <= float(ts[0]) < TIMESTAMP_MAX
            assert float(ts[0]) == read_geotiff(path).metadata["timestamps"][0]
            dated += 1
    assert dated > 0


def test_prithvi_takes_longitudes_0_to_360_and_refuses_bad_latitudes():
    enc = _tl_prithvi()
    x = torch.randn(2, 6, 1, 32, 32)
    with torch.no_grad():
        east = enc.forward_features(x, metadata={"latlon": [[10.0, 350.0], [-33.0, 181.0]]})[0]
        west = enc.forward_features(x, metadata={"latlon": [[10.0, -10.0], [-33.0, -179.0]]})[0]
    torch.testing.assert_close(east, west)
    with pytest.raises(EncoderInputError, match=r"latitude in -90\.\.90"):
        enc.forward_features(x, metadata={"latlon": [[95.0, 10.0], [0.0, 0.0]]})
    with pytest.raises(EncoderInputError, match=r"out of range"):
        enc.forward_features(x, metadata={"latlon": [[45.0, 400.0], [0.0, 0.0]]})


_FAMILIES = {
    "dinov2": lambda: (build_encoder("dinov2_test", depth=2), (3, 28, 28), {}),
    "dinov3": lambda: (build_encoder("dinov3_test", depth=2), (3, 32, 32), {}),
    "prithvi": lambda: (_tl_prithvi(), (6, 1, 32, 32), {"timestamps": [], "latlon": []}),
    "clay": lambda: (build_encoder("clay_test", depth=2), (3, 16, 16),
                     {"wavelengths": [0.665, 0.56, 0.49], "gsd": 10.0, "timestamps": [], "latlon": []}),
    "copernicusfm": lambda: (build_encoder("copernicusfm_test", depth=2, img_size=32,
                                           bands=("B04", "B03", "B02")), (3, 32, 32),
                             {"wavelengths": [0.665, 0.56, 0.493], "gsd": 10.0, "timestamps": [], "latlon": []}),
}


def _family_metadata(md: dict, batch: int) -> dict:
    out = dict(md)
    if "timestamps" in out:
        out["timestamps"] = torch.full((batch, 1), _utc(2022, 9, 7), dtype=torch.float64)
    if "latlon" in out:
        out["latlon"] = torch.tensor([[45.0, 7.0]] * batch).reshape(batch, 2)
    return out


@pytest.mark.parametrize("family", sorted(_FAMILIES))
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.uint16, torch.int32],
                         ids=lambda d: str(d).replace("torch.", ""))
def test_encoders_cast_half_and_integer_input(family, dtype):
    enc, shape, md = _FAMILIES[family]()
    enc.eval()
    x = torch.rand(2, *shape) * (1000 if not dtype.is_floating_point else 1)
    x = x.to(dtype)
    md = _family_metadata(md, 2)
    with torch.no_grad():
        got = enc.forward_features(x, layers=[0, -1], metadata=md)
        want = enc.forward_features(x.float(), layers=[0, -1], metadata=md)
    for g, w in zip(got, want):
        assert g.dtype == torch.float32
        torch.testing.assert_close(g, w, rtol=0, atol=0)


@pytest.mark.parametrize("family", sorted(_FAMILIES))
def test_empty_layers_and_empty_batches(family):
    enc, shape, md = _FAMILIES[family]()
    enc.eval()
    with pytest.raises(EncoderInputError, match=r"layers=\[\] asks for no feature map; give at least one block"):
        enc.forward_features(torch.randn(1, *shape), layers=[], metadata=_family_metadata(md, 1))
    with torch.no_grad():
        full = enc.forward_features(torch.randn(1, *shape), layers=[0, 1], metadata=_family_metadata(md, 1))
        empty = enc.forward_features(torch.randn(0, *shape), layers=[0, 1], metadata=_family_metadata(md, 0))
    for e, f in zip(empty, full):
        assert e.shape == (0, *f.shape[1:])
    with pytest.raises(EncoderInputError, match=r"layers=\[\] asks for no feature map"):
        GeoBackbone(enc, layers=[])


# -- targets ------------------------------------------------------------------------------------
def test_semantic_labels_at_or_above_num_classes_name_the_file(tmp_path):
    from d2geo.data.datasets import register_geo_semseg
    from detectron2.data import DatasetCatalog, MetadataCatalog

    image = write_tif(tmp_path / "img.tif", np.ones((5, 32, 32), dtype="uint16"))
    labels = np.zeros((32, 32), dtype="uint8")
    labels[:4] = 255  # ignored: fine
    labels[10, 10] = 7
    label = write_tif(tmp_path / "lab.tif", labels)
    fine = GeoDatasetMapper(True, augmentations=[], num_classes=8)({"file_name": image, "sem_seg_file_name": label})
    assert fine["sem_seg"].max() == 255
    for is_train in (True, False):  # evaluation reads the same files
        with pytest.raises(GeoTiffError, match=r"lab.tif holds labels \[7\] but there are 5 classes .*label_map"):
            GeoDatasetMapper(is_train, augmentations=[], num_classes=5)(
                {"file_name": image, "sem_seg_file_name": label})
    name = "bad_inputs_label_range"
    try:  # registered datasets know their class count
        register_geo_semseg(name, [(image, label)], stuff_classes=["a", "b", "c"])
        with pytest.raises(GeoTiffError, match=r"lab.tif holds labels \[7\] but there are 3 classes"):
            GeoDatasetMapper(True, augmentations=[])(DatasetCatalog.get(name)[0])
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    # dicts built by hand reach the model: it names the sample and its file
    seg = tiny_segmentor(SimpleFeaturePyramid(dino_backbone(), out_channels=32), num_bands=5).train()
    good, bad = _sample(H=32, W=32), _sample(H=32, W=32, seed=1)
    bad["sem_seg"][3, 3] = 3  # 3 classes: 0..2
    bad["file_name"] = "tile_9.tif"
    with pytest.raises(EncoderInputError, match=r"sample 1 of the batch \(tile_9.tif\) has sem_seg labels \[3\] "
                                                r"but the head predicts 3 classes"):
        seg([good, bad])
    good["sem_seg"][0, 0] = 255
    assert torch.isfinite(seg([good])["loss_sem_seg"])


def test_negative_size_boxes_are_dropped_with_or_without_a_flip(tmp_path, caplog):
    from detectron2.structures import BoxMode

    path = write_tif(tmp_path / "boxes.tif", np.ones((3, 32, 32), dtype="uint16"))
    annos = [{"id": 41, "bbox": [2, 2, 10, 10], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 0, "iscrowd": 0},
             {"id": 42, "bbox": [20, 4, -8, 6], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 1, "iscrowd": 0},
             {"bbox": [30, 20, 22, 28], "bbox_mode": BoxMode.XYXY_ABS, "category_id": 1, "iscrowd": 0}]
    for augs in ([], [T.RandomFlip(prob=1.0)], [T.RandomFlip(prob=1.0, horizontal=False, vertical=True)]):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="d2geo.data.mapper"):
            out = GeoDatasetMapper(True, augmentations=augs)({"file_name": path, "annotations": annos,
                                                              "image_id": 3})
        assert len(out["instances"]) == 1 and out["instances"].gt_classes.tolist() == [0]
    GeoDatasetMapper._warned_boxes.clear()
    with caplog.at_level(logging.WARNING, logger="d2geo.data.mapper"):
        GeoDatasetMapper(True, augmentations=[])({"file_name": path, "annotations": annos})
    assert re.search(r"dropping annotation id=42 \(#1 of the image\) of .*boxes.tif: its box \[20, 4, -8, 6\] "
                     r"\(XYWH_ABS\) has negative width or height", caplog.text)
    assert "id=? (#2 of the image)" in caplog.text


# -- metadata is validated once, where it enters ---------------------------------------------------
def test_metadata_is_validated_once_where_it_enters(monkeypatch):
    import d2geo.encoders.metadata as metadata_mod
    calls = []
    validate = metadata_mod._validate_metadata
    monkeypatch.setattr(metadata_mod, "_validate_metadata", lambda *a, **k: calls.append(1) or validate(*a, **k))
    net = GeoBackbone(_tl_prithvi())
    model = tiny_segmentor(SimpleFeaturePyramid(net, out_channels=32), num_bands=6).eval()
    sample = _sample(C=6, H=32, W=32)
    with torch.no_grad():
        model([sample, _sample(C=6, H=32, W=32, seed=1)])
        assert len(calls) == 1  # in the meta-architecture only, not again in backbone and encoder
        net.encoder.forward_features(torch.randn(1, 6, 32, 32), metadata={"latlon": [[1.0, 2.0]]})
        assert len(calls) == 2  # a direct encoder call validates at its entry
        with pytest.raises(EncoderInputError, match=r"the backbone holds metadata '\w+' for 2 images but got a batch of 1"):
            net(torch.randn(1, 6, 32, 32))  # stale metadata of the last batch
