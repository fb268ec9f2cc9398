"""Scene-scale semantic evaluation: overlapping windows blended as in region inference, scored
on the part's windows; a model that reads the class from the pixel position scores exactly."""
from __future__ import annotations

import pytest
import shapely
import torch

from d2geo.data.scenes import build_scene_datasets, open_scenes, register_geo_scenes
from d2geo.data.scenes.index import reproject_geometry
from d2geo.inference.scene_eval import evaluate_scene_semantic

import scene_fixtures  # this folder's helpers and fixtures
from scene_fixtures import ZONES, write_labels

_clean_catalog = scene_fixtures._clean_catalog
two_zones = scene_fixtures.two_zones


class ColumnModel(torch.nn.Module):
    """Class 1 left of column ``edge`` of the scene, else 0 (band 1 of the test scenes holds column + 1)."""

    def __init__(self, edge: int):
        super().__init__()
        self.edge = edge

    def forward(self, batch):
        out = []
        for b in batch:
            left = (b["image"][0] <= self.edge).float()
            out.append({"sem_seg": torch.stack([1 - left, left]) * 10})
        return out


@pytest.mark.parametrize("edge, expected", [(150, 100.0), (140, 100 * (140 / 150 + 150 / 160) / 2)])
def test_scene_scale_miou_is_exact_for_a_model_that_knows_the_position(two_zones, tmp_path, edge, expected):
    path = two_zones[0]
    s = open_scenes([path])[0]
    (x0, y0), (x1, y1) = s.transform * (0, 0), s.transform * (150, 300)
    left = reproject_geometry(shapely.box(x0, y1, x1, y0), s.crs, "EPSG:4326")
    labels = write_labels(tmp_path / "l.gpkg", [(left, {"c": "left"})])
    (name,) = register_geo_scenes("_eval", [path], labels, task="semantic", classes=["right", "left"],
                                  class_key="c", background="right", window=64, sampler="grid")
    res = evaluate_scene_semantic(ColumnModel(edge), name, tile=64, overlap=16)["sem_seg"]
    assert res["mIoU"] == pytest.approx(expected, abs=1e-6)
    assert res["IoU-left"] == pytest.approx(100 * min(edge, 150) / max(edge, 150), abs=1e-6)


def test_scene_scale_evaluation_scores_only_the_parts_windows(two_zones, tmp_path):
    path = two_zones[1]
    s = open_scenes([path])[0]
    crs = ZONES[1][0]
    (x0, y0), (x1, y1) = s.transform * (0, 0), s.transform * (150, 300)
    labels = write_labels(tmp_path / "l.geojson", [(shapely.box(x0, y1, x1, y0), {"c": "left"})], crs=crs,
                          driver="GeoJSON")
    datasets, *_ = build_scene_datasets("_p", [path], labels, task="semantic", classes=["right", "left"],
                                        class_key="c", background="right", window=64, sampler="grid")
    from detectron2.data import DatasetCatalog, MetadataCatalog

    # a part of only the right half's windows (from column 172): read at the right scene offset, the
    # position model predicts "right" everywhere there
    DatasetCatalog.register("_p_right", lambda: [d for d in datasets["_p"] if d["window"][0] >= 150])
    MetadataCatalog.get("_p_right").set(stuff_classes=["right", "left"], ignore_label=255, window=64)
    res = evaluate_scene_semantic(ColumnModel(150), "_p_right", tile=64, overlap=16)["sem_seg"]
    assert res["mIoU"] == pytest.approx(100.0) and res["pACC"] == pytest.approx(100.0)


def _left_half(two_zones, tmp_path):
    path = two_zones[0]
    s = open_scenes([path])[0]
    (x0, y0), (x1, y1) = s.transform * (0, 0), s.transform * (150, 300)
    left = reproject_geometry(shapely.box(x0, y1, x1, y0), s.crs, "EPSG:4326")
    return path, write_labels(tmp_path / "l.gpkg", [(left, {"c": "left"})])


def test_the_config_route_gives_the_scene_scale_metric(two_zones, tmp_path):
    """scene_eval_windows as the test dataset and SceneSemSegEvaluator as the evaluator, run by
    detectron2's inference_on_dataset (what tools/train_net.py's do_test does with the config)."""
    from detectron2.data import build_detection_test_loader
    from detectron2.evaluation import inference_on_dataset

    from d2geo.data.mapper import GeoDatasetMapper
    from d2geo.inference.scene_eval import SceneSemSegEvaluator, scene_eval_windows

    path, labels = _left_half(two_zones, tmp_path)
    (name,) = register_geo_scenes("_cfg", [path], labels, task="semantic", classes=["right", "left"],
                                  class_key="c", background="right", window=64, sampler="grid")
    windows = scene_eval_windows(name, overlap=16)
    # the scene box is 256 px (four 64 px grid windows): windows step by 48 px, the last one ends at the box edge
    assert [w["window"][:2] for w in windows[:5]] == [(0, 0), (48, 0), (96, 0), (144, 0), (192, 0)]
    assert all(w["window"][2:] == (64, 64) and "scene_labels" not in w for w in windows)
    loader = build_detection_test_loader(windows, mapper=GeoDatasetMapper(is_train=False), num_workers=0)
    res = inference_on_dataset(ColumnModel(140), loader, SceneSemSegEvaluator(name, overlap=16))["sem_seg"]
    direct = evaluate_scene_semantic(ColumnModel(140), name, overlap=16)["sem_seg"]
    assert res == pytest.approx(direct)
    assert res["mIoU"] == pytest.approx(100 * (140 / 150 + 150 / 160) / 2, abs=1e-6)


def test_the_scene_evaluator_refuses_windows_it_did_not_plan(two_zones, tmp_path):
    """The part's own grid windows (the window-by-window test loader) fed to the scene-scale
    evaluator: a clear error naming the loader to build, not a metric over partial scenes."""
    from detectron2.data import DatasetCatalog, build_detection_test_loader
    from detectron2.evaluation import inference_on_dataset

    from d2geo.data.geotiff import GeoTiffError
    from d2geo.data.mapper import GeoDatasetMapper
    from d2geo.inference.scene_eval import SceneSemSegEvaluator

    path, labels = _left_half(two_zones, tmp_path)
    (name,) = register_geo_scenes("_bad", [path], labels, task="semantic", classes=["right", "left"],
                                  class_key="c", background="right", window=64, sampler="grid")
    loader = build_detection_test_loader(DatasetCatalog.get(name), mapper=GeoDatasetMapper(is_train=False),
                                         num_workers=0)
    with pytest.raises(GeoTiffError, match=r"must yield scene_eval_windows\('_bad'"):
        inference_on_dataset(ColumnModel(150), loader, SceneSemSegEvaluator(name, overlap=16))


def test_windows_that_touch_none_of_the_parts_windows_are_not_predicted(two_zones, tmp_path):
    """A part of two far-apart windows (opposite corners of a 256 px box) is predicted by the grid
    windows that reach them, not by the whole box's grid, and still scored exactly."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from d2geo.inference.scene_eval import scene_eval_windows
    from d2geo.inference.windows import tile_windows

    path, labels = _left_half(two_zones, tmp_path)
    datasets, *_ = build_scene_datasets("_c", [path], labels, task="semantic", classes=["right", "left"],
                                        class_key="c", background="right", window=64, sampler="grid")
    corners = [d for d in datasets["_c"] if d["window"][:2] in ((0, 0), (192, 192))]
    assert len(corners) == 2
    DatasetCatalog.register("_corners", lambda: corners)
    MetadataCatalog.get("_corners").set(stuff_classes=["right", "left"], ignore_label=255, window=64)
    got = [tuple(w["window"][:2]) for w in scene_eval_windows("_corners", overlap=16)]
    full = tile_windows(256, 256, 64, 16)  # 5 x 5 windows at 0, 48, 96, 144, 192
    assert len(full) == 25
    # those reaching [0, 64) x [0, 64) or [192, 256) x [192, 256): starts 0 and 48, or 144 and 192
    assert got == [(c, r) for r, c in full if (r < 64 and c < 64) or (r + 64 > 192 and c + 64 > 192)]
    assert len(got) == 8
    res = evaluate_scene_semantic(ColumnModel(150), "_corners", overlap=16)["sem_seg"]
    assert res["mIoU"] == pytest.approx(100.0)
