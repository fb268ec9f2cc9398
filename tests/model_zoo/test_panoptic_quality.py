"""PanopticQualityEvaluator (torchmetrics' PanopticQuality behind detectron2's evaluator API)
on hand-made predictions whose PQ follows from the definition."""
from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("detectron2", reason="detectron2 is not installed: see README for installing it from source")
pytest.importorskip("rasterio")
pytest.importorskip("torchmetrics", reason="the panoptic evaluator needs torchmetrics (pip install 'd2geo[panoptic]')")

from rasterio.transform import from_origin  # noqa: E402

from helpers import write_tif  # noqa: E402
from d2geo.data.panoptic import register_geo_panoptic  # noqa: E402
from d2geo.model_zoo.evaluation import PanopticQualityEvaluator, panoptic_pairs  # noqa: E402

STUFF, THINGS = ["forest", "water"], ["field"]  # raster values: forest 0, water 1, field 2


@pytest.fixture
def dataset(tmp_path, d2_catalog):
    """One 10 x 10 image: forest in columns 0-4, field 1 in rows 0-4 and field 2 in rows 5-9 of
    columns 5-9; water nowhere."""
    return _register(tmp_path, d2_catalog, "_pq_hand")


def _register(tmp_path, d2_catalog, name, void=False):
    t = from_origin(0, 100, 10, 10)
    img = write_tif(tmp_path / "img.tif", np.ones((3, 10, 10), np.uint16), transform=t)
    classes = np.zeros((10, 10), np.uint8)
    classes[:, 5:] = 2
    ids = np.zeros((10, 10), np.uint16)
    ids[:5, 5:] = 1
    ids[5:, 5:] = 2
    if void:  # no label in rows 0-1 of columns 0-1 (inside the forest)
        classes[:2, :2] = 255
    cls = write_tif(tmp_path / "cls.tif", classes, transform=t)
    inst = write_tif(tmp_path / "ids.tif", ids, transform=t)
    register_geo_panoptic(name, [(img, cls, inst)], stuff_classes=STUFF, thing_classes=THINGS,
                          cache_dir=str(tmp_path / name))
    d2_catalog.append(name)
    from detectron2.data import DatasetCatalog

    return DatasetCatalog.get(name)


def _prediction():
    """PanopticFPN's output format: forest exactly (segment 1, semantic label 0 + 1); field 1
    found with one row too many (30 px over its 25: IoU 25/30); field 2 missed (unassigned)."""
    seg = torch.zeros(10, 10, dtype=torch.int32)
    seg[:, :5] = 1
    seg[:6, 5:] = 2
    infos = [{"id": 1, "isthing": False, "category_id": 1, "area": 50},
             {"id": 2, "isthing": True, "category_id": 0, "score": 0.9, "instance_id": 0, "area": 30}]
    return seg, infos


def test_panoptic_quality_of_a_hand_made_prediction(dataset):
    ev = PanopticQualityEvaluator("_pq_hand")
    ev.reset()
    ev.process(dataset, [{"panoptic_seg": _prediction()}])
    res = ev.evaluate()["panoptic_seg"]
    # by the definition: forest TP with IoU 1 -> PQ = SQ = RQ = 1. field: one TP (IoU 5/6), one
    # FN (field 2), no FP (the extra row is field 2's, but IoU 5/6 > 0.5 keeps the match):
    # SQ = 5/6, RQ = 1 / (1 + 0.5 * 0 + 0.5 * 1) = 2/3, PQ = 5/9. water occurs nowhere: not averaged.
    assert res["PQ-forest"] == pytest.approx(100.0)
    assert res["SQ-field"] == pytest.approx(100 * 5 / 6)
    assert res["RQ-field"] == pytest.approx(100 * 2 / 3)
    assert res["PQ-field"] == pytest.approx(100 * 5 / 9)
    assert "PQ-water" not in res
    assert res["PQ_th"] == pytest.approx(100 * 5 / 9) and res["PQ_st"] == pytest.approx(100.0)
    assert res["PQ"] == pytest.approx(100 * (5 / 9 + 1) / 2)
    assert res["SQ"] == pytest.approx(100 * (5 / 6 + 1) / 2)
    assert res["RQ"] == pytest.approx(100 * (2 / 3 + 1) / 2)


def test_a_wrong_class_is_a_false_positive_and_a_miss(dataset):
    seg, infos = _prediction()
    infos[0]["category_id"] = 2  # forest predicted as water
    ev = PanopticQualityEvaluator("_pq_hand")
    ev.reset()
    ev.process(dataset, [{"panoptic_seg": (seg, infos)}])
    res = ev.evaluate()["panoptic_seg"]
    assert res["PQ-forest"] == 0.0 and res["PQ-water"] == 0.0  # FN for forest, FP for water
    assert res["PQ_st"] == 0.0


def test_panoptic_pairs_numbering():
    seg, infos = _prediction()
    pairs = panoptic_pairs((seg, infos), num_things=1)
    assert (pairs[:, :5, 0] == 1).all()  # forest: stuff 0 -> category K + 0
    assert (pairs[:6, 5:, 0] == 0).all() and (pairs[:6, 5:, 1] == 2).all()
    assert (pairs[6:, 5:, 0] == -1).all()


def test_prediction_of_another_size_is_refused(dataset):
    seg, infos = _prediction()
    ev = PanopticQualityEvaluator("_pq_hand")
    with pytest.raises(ValueError, match=r"is \(9, 10\) but its ground truth \(10, 10\)"):
        ev.process(dataset, [{"panoptic_seg": (seg[:9], infos)}])


def test_unlabelled_ground_truth_is_left_out(tmp_path, d2_catalog):
    """Pixels without ground truth leave the union (forest predicted over them keeps IoU 1) and a
    prediction lying on them only is no false positive (panopticapi's rules)."""
    data = _register(tmp_path, d2_catalog, "_pq_void", void=True)
    seg, infos = _prediction()
    ev = PanopticQualityEvaluator("_pq_void")
    ev.reset()
    ev.process(data, [{"panoptic_seg": (seg, infos)}])
    assert ev.evaluate()["panoptic_seg"]["PQ-forest"] == pytest.approx(100.0)
    seg = seg.clone()
    seg[:2, :2] = 3  # a field predicted on the unlabelled pixels only
    infos = infos + [{"id": 3, "isthing": True, "category_id": 0, "score": 0.9, "instance_id": 1, "area": 4}]
    ev.reset()
    ev.process(data, [{"panoptic_seg": (seg, infos)}])
    res = ev.evaluate()["panoptic_seg"]
    assert res["PQ-forest"] == pytest.approx(100.0)
    assert res["RQ-field"] == pytest.approx(100 * 2 / 3)  # still one TP and one FN, no FP
