"""The scene loader's fast path gives the same samples as before: metadata values share one
tensor storage, windows are read straight into shared memory inside a DataLoader worker (and
only there), the overflow check still runs where scaling can overflow, and lon/lat from the
cached transformer equal rasterio's."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import d2geo.data.mapper as mapper_module
from d2geo.data.geotiff import read_geotiff, tile_latlon
from d2geo.data.mapper import GeoDatasetMapper
from d2geo.data.scenes import build_scene_datasets

import scene_fixtures  # this folder's helpers and fixtures
from scene_fixtures import ZONES, write_cog, write_labels

_clean_catalog = scene_fixtures._clean_catalog


def _dicts(tmp_path, count=6):
    import shapely

    scene = write_cog(tmp_path / "scene.tif", crs=ZONES[0][0], origin=ZONES[0][1])
    x0, y0 = ZONES[0][1]
    from scene_fixtures import lonlat_of

    corners = [lonlat_of(ZONES[0][0], x0 + dx, y0 - dy) for dx, dy in [(500, 500), (2500, 500), (2500, 2500), (500, 2500)]]
    labels = write_labels(tmp_path / "labels.gpkg", [(shapely.Polygon(corners), {"cls": "a"})])
    datasets, *_ = build_scene_datasets("_transport", [scene], labels, task="semantic", classes=["a"],
                                        class_key="cls", background=0, window=128, sampler="random",
                                        count=count, seed=0)
    return datasets["_transport"]


def _in_worker(monkeypatch):
    monkeypatch.setattr(torch.utils.data, "get_worker_info", lambda: object())


def test_metadata_values_share_one_storage_with_the_same_values(tmp_path):
    from rasterio.windows import Window

    d = _dicts(tmp_path)[0]
    d["geo"] = dict(d.get("geo") or {}, band_names=["red", "green", "blue"])
    out = GeoDatasetMapper(is_train=True, augmentations=[], sensor="sentinel-2-l2a")(d)
    md = out["metadata"]
    assert list(md) == ["latlon", "gsd", "wavelengths"]
    sample = read_geotiff(d["file_name"], sensor="sentinel-2-l2a", band_names=["red", "green", "blue"],
                          window=Window(*d["window"]))
    assert md["latlon"].dtype == md["gsd"].dtype == torch.float32
    assert md["latlon"].shape == (2,) and md["gsd"].shape == () and md["wavelengths"].shape == (3,)
    np.testing.assert_array_equal(md["latlon"].numpy(), sample.metadata["latlon"].astype(np.float32))
    assert float(md["gsd"]) == pytest.approx(sample.metadata["gsd"])
    np.testing.assert_array_equal(md["wavelengths"].numpy(), np.float32(sample.metadata["wavelengths"]))
    ptrs = {t.untyped_storage().data_ptr() for t in md.values()}
    assert len(ptrs) == 1  # one storage: one shared-memory segment per sample in a worker


def test_worker_reads_windows_into_shared_memory_and_gets_the_same_sample(tmp_path, monkeypatch):
    dicts = _dicts(tmp_path)
    mapper = GeoDatasetMapper(is_train=True, augmentations=[])
    plain = [mapper(d) for d in dicts]
    assert not plain[0]["image"].is_shared() and not plain[0]["sem_seg"].is_shared()
    _in_worker(monkeypatch)
    shared = [mapper(d) for d in dicts]
    for a, b in zip(plain, shared):
        assert b["image"].is_shared() and b["sem_seg"].is_shared()
        assert b["image"].dtype == torch.float32 and b["sem_seg"].dtype == torch.int64
        torch.testing.assert_close(a["image"], b["image"], rtol=0, atol=0)
        torch.testing.assert_close(a["sem_seg"], b["sem_seg"], rtol=0, atol=0)
        # one segment per sample: the metadata values live after the image
        assert b["image"].untyped_storage().data_ptr() == b["metadata"]["gsd"].untyped_storage().data_ptr()
        torch.testing.assert_close(a["metadata"]["latlon"], b["metadata"]["latlon"], rtol=0, atol=0)
        torch.testing.assert_close(a["metadata"]["gsd"], b["metadata"]["gsd"], rtol=0, atol=0)
    assert any((s["sem_seg"] == 0).any() for s in shared)  # the labels were burnt, not left blank


def test_worker_with_augmentations_or_normalization_does_not_read_into_shared_memory(tmp_path, monkeypatch):
    from detectron2.data import transforms as T

    d = _dicts(tmp_path)[0]
    _in_worker(monkeypatch)
    calls = []
    real = mapper_module._shared_empty
    monkeypatch.setattr(mapper_module, "_shared_empty", lambda *a: calls.append(a[1]) or real(*a))
    flip = GeoDatasetMapper(is_train=True, augmentations=[T.RandomFlip(prob=1.0)])(d)
    norm = GeoDatasetMapper(is_train=True, augmentations=[], mean=[1, 2, 3], std=[1, 1, 1])(d)
    assert torch.float32 not in calls  # the image was not read into shared memory ...
    assert flip["image"].shape == norm["image"].shape == (3, 128, 128)
    plain = GeoDatasetMapper(is_train=True, augmentations=[])(d)
    torch.testing.assert_close(norm["image"], plain["image"] - torch.tensor([1.0, 2, 3])[:, None, None])


def test_dataloader_workers_give_the_samples_of_the_main_process(tmp_path):
    dicts = _dicts(tmp_path, count=8)
    mapper = GeoDatasetMapper(is_train=True, augmentations=[])

    class DS(torch.utils.data.Dataset):
        def __len__(self):
            return len(dicts)

        def __getitem__(self, i):
            return mapper(dicts[i])

    loader = torch.utils.data.DataLoader(DS(), batch_size=4, num_workers=1, collate_fn=lambda b: b)
    got = [s for batch in loader for s in batch]
    for d, s in zip(dicts, got):
        want = mapper(d)
        torch.testing.assert_close(s["image"], want["image"], rtol=0, atol=0)
        torch.testing.assert_close(s["sem_seg"], want["sem_seg"], rtol=0, atol=0)
        for k in want["metadata"]:
            torch.testing.assert_close(s["metadata"][k], want["metadata"][k], rtol=0, atol=0)


def test_scaled_integers_that_overflow_float32_are_still_invalid(tmp_path):
    import rasterio
    from rasterio.transform import from_origin

    path = tmp_path / "big.tif"
    data = np.full((1, 8, 8), 1000, dtype=np.int16)
    data[0, :4] = 1
    with rasterio.open(path, "w", driver="GTiff", width=8, height=8, count=1, dtype="int16", crs="EPSG:32631",
                       transform=from_origin(500_000, 5_000_000, 10, 10)) as dst:
        dst.write(data)
    # 1000 * 1e36 overflows float32, 1 * 1e36 does not
    sample = read_geotiff(path, scale=1e36, fill=None, window=rasterio.windows.Window(0, 0, 8, 8))
    assert sample.valid[:4].all() and not sample.valid[4:].any()
    assert np.isnan(sample.image[0, 4:]).all() and np.isfinite(sample.image[0, :4]).all()
    unscaled = read_geotiff(path, fill=None, window=rasterio.windows.Window(0, 0, 8, 8))
    assert unscaled.valid.all()


@pytest.mark.parametrize("crs, xy", [("EPSG:32631", (499_000.0, 4_985_000.0)), ("EPSG:3857", (1_000_000.0, 6_000_000.0)),
                                     ("EPSG:26717", (500_000.0, 4_500_000.0)), ("EPSG:4326", (10.0, 60.0))])
def test_tile_latlon_equals_rasterio_warp(crs, xy):
    from rasterio.crs import CRS
    from rasterio.transform import from_origin
    from rasterio.warp import transform as warp

    crs = CRS.from_user_input(crs)
    res = 0.001 if crs.is_geographic else 10.0
    t = from_origin(xy[0], xy[1], res, res)
    x, y = t * (128, 64)
    lon, lat = warp(crs, "EPSG:4326", [x], [y])
    np.testing.assert_allclose(tile_latlon(crs, t, 128, 256), [lat[0], lon[0]], rtol=0, atol=1e-9)
