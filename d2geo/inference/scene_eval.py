"""Scene-scale semantic evaluation: the metric of the map a user gets.

For each scene of a dataset part of :func:`d2geo.data.register_geo_scenes` (e.g. its
``_val`` part), the bounding box of the part's windows is predicted the way
``predict_scene``/``predict_region`` do: overlapping windows (:func:`.windows.tile_windows`,
row-major), their logits weighted by :func:`.windows.blend_weights` and summed in a
:class:`.blend.BlendBuffer`, whose finished rows are arg-maxed. The ground truth is the part's
own windows (rasterized by ``GeoDatasetMapper`` as in training); pixels outside them (the
split's buffers, other parts) are not scored, but are read as context where a window reaches
them. Windows of the box's grid that touch none of the part's windows are skipped (they would
change no scored pixel).

In a LazyConfig (``tools/train_net.py``'s ``do_test`` needs nothing else)::

    dataloader.test.dataset = L(scene_eval_windows)(dataset_name="..._val", overlap=24)
    dataloader.evaluator = L(SceneSemSegEvaluator)(dataset_name="..._val", overlap=24)

The test loader must yield the windows of :func:`scene_eval_windows` in their order (one
process; the evaluator refuses anything else, naming what it got). Outside a trainer,
:func:`evaluate_scene_semantic` runs the loop. Memory: a ``K x tile x width`` buffer and the
box's uint8 ground truth per scene.
"""
from __future__ import annotations

import copy
import logging
from collections import OrderedDict

import numpy as np
import torch

from d2geo.data.geotiff import GeoTiffError

from .blend import NODATA_CLASS, BlendBuffer
from .windows import blend_weights, tile_windows, window_shape

logger = logging.getLogger(__name__)

__all__ = ["scene_eval_windows", "SceneSemSegEvaluator", "evaluate_scene_semantic"]

_LABEL_KEYS = ("scene_labels", "scene_label_options", "label_raster", "annotations", "sem_seg_file_name")


def _scene_key(d: dict) -> tuple:
    return tuple(d.get("file_names") or [d["file_name"]])


def _plan(dataset_name: str, tile: int | None, overlap: int | None):
    """``(tile, overlap, {scene key: {"box", "dicts", "windows", "shape"}})`` of a part."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    dicts = DatasetCatalog.get(dataset_name)
    if not dicts:
        raise GeoTiffError(f"dataset {dataset_name!r} has no windows to evaluate")
    if any(d.get("window") is None for d in dicts):
        raise GeoTiffError(f"dataset {dataset_name!r} is not made of scene windows (no 'window' in its dicts): "
                           "scene-scale evaluation is for datasets of register_geo_scenes")
    meta = MetadataCatalog.get(dataset_name)
    tile = int(tile or meta.get("window", dicts[0]["window"][2]))
    overlap = tile // 4 if overlap is None else int(overlap)
    scenes: dict = OrderedDict()
    for d in dicts:
        scenes.setdefault(_scene_key(d), {"dicts": []})["dicts"].append(d)
    for s in scenes.values():
        ws = [d["window"] for d in s["dicts"]]
        c0, r0 = min(w[0] for w in ws), min(w[1] for w in ws)
        h, w = max(w[1] + w[3] for w in ws) - r0, max(w[0] + w[2] for w in ws) - c0
        s["box"] = (c0, r0, h, w)
        s["shape"] = th, tw = window_shape(h, w, tile)
        # the prediction grid of the whole box, less the windows that touch none of the part's
        # windows (a part is scattered blocks: most of its box is other parts): those windows
        # add nothing to a scored pixel, so every scored pixel is blended exactly as predicted
        scored = np.zeros((h + 1, w + 1), np.int64)  # a summed-area table of the part's windows
        for wc, wr, ww, wh in ws:
            scored[wr - r0 + 1:wr - r0 + wh + 1, wc - c0 + 1:wc - c0 + ww + 1] = 1
        scored = scored.cumsum(0).cumsum(1)
        s["windows"] = [(r, c) for r, c in tile_windows(h, w, tile, overlap)
                        if scored[r + th, c + tw] - scored[r, c + tw] - scored[r + th, c] + scored[r, c] > 0]
    return tile, overlap, scenes


def scene_eval_windows(dataset_name: str, tile: int | None = None, overlap: int | None = None) -> list[dict]:
    """The dataset dicts of the overlapping windows that predict each scene box of ``dataset_name``
    (no labels; read by ``GeoDatasetMapper``), scene by scene, row-major."""
    _, _, scenes = _plan(dataset_name, tile, overlap)
    out = []
    for s in scenes.values():
        base = {k: v for k, v in s["dicts"][0].items() if k not in _LABEL_KEYS}
        c0, r0, _, _ = s["box"]
        th, tw = s["shape"]
        for r, c in s["windows"]:
            q = copy.deepcopy(base)
            q.update(window=(c0 + c, r0 + r, tw, th), height=th, width=tw, image_id=len(out))
            out.append(q)
    return out


class SceneSemSegEvaluator:
    """detectron2 ``DatasetEvaluator`` of scene-scale mIoU (see the module docstring).

    Args:
        dataset_name: the part whose windows are the ground truth (its ``stuff_classes``).
        tile, overlap: the prediction windows (default: the part's window, a quarter of it).
        mapper: reads the ground-truth windows (default ``GeoDatasetMapper(is_train=False)``).
    """

    def __init__(self, dataset_name: str, tile: int | None = None, overlap: int | None = None, mapper=None,
                 output_dir: str | None = None):
        from detectron2.data import MetadataCatalog

        self.dataset_name, self._tile, self._overlap, self._mapper = dataset_name, tile, overlap, mapper
        meta = MetadataCatalog.get(dataset_name)
        self.classes = list(meta.stuff_classes)
        self.ignore = int(meta.get("ignore_label", 255))
        self.reset()

    def reset(self):
        from detectron2.utils import comm

        if comm.get_world_size() > 1:
            raise GeoTiffError("scene-scale evaluation blends the windows of a scene in one process: evaluate with "
                               "one process (or use WindowSemSegEvaluator, which scores windows one by one)")
        self.tile, self.overlap, self._scenes = _plan(self.dataset_name, self._tile, self._overlap)
        self._weights = blend_weights(self.tile, self.overlap)
        self._conf = np.zeros((len(self.classes),) * 2, dtype=np.int64)
        self._current, self._buf, self._gt, self._seen = None, None, None, {}

    def _loader_hint(self) -> str:
        return (f"the test loader must yield scene_eval_windows({self.dataset_name!r}, tile={self.tile}, "
                f"overlap={self.overlap}) in order (no shuffling, one process)")

    def _ground_truth(self, s) -> np.ndarray:
        if self._mapper is None:
            from d2geo.data.mapper import GeoDatasetMapper

            self._mapper = GeoDatasetMapper(is_train=False, augmentations=[])
        c0, r0, h, w = s["box"]
        gt = np.full((h, w), self.ignore, dtype=np.uint8)
        for d in s["dicts"]:
            col, row, ww, hh = d["window"]
            gt[row - r0:row - r0 + hh, col - c0:col - c0 + ww] = self._mapper(d)["sem_seg"].numpy()
        return gt

    def _score(self, rows) -> None:
        if rows is None:
            return
        k = len(self.classes)
        gt = self._gt[rows.row:rows.row + rows.labels.shape[0], rows.col:rows.col + rows.labels.shape[1]]
        pred = rows.labels.astype(np.int64)
        ok = gt != self.ignore
        if (pred[ok] == NODATA_CLASS).any():  # a labelled pixel no window predicted: never silently skipped
            raise GeoTiffError(f"scene-scale evaluation of {self.dataset_name}: labelled pixels of "
                               f"{self._current[0]} got no prediction")
        self._conf += np.bincount(k * gt[ok].astype(np.int64) + pred[ok], minlength=k * k).reshape(k, k)

    def _finish(self) -> None:
        if self._current is None:
            return
        s = self._scenes[self._current]
        if self._seen[self._current] != len(s["windows"]):
            raise GeoTiffError(
                f"scene-scale evaluation of {self.dataset_name}: {self._current[0]} got "
                f"{self._seen[self._current]} of its {len(s['windows'])} windows: {self._loader_hint()}")
        while self._buf.top < s["box"][2]:
            self._score(self._buf.flush(s["box"][2]))
        self._current, self._buf, self._gt = None, None, None

    def process(self, inputs, outputs):
        for inp, out in zip(inputs, outputs):
            key = _scene_key(inp)
            s = self._scenes.get(key)
            if s is None or inp.get("window") is None:
                raise GeoTiffError(f"{inp.get('file_name')} window {inp.get('window')} is not a window of the scenes "
                                   f"of {self.dataset_name}: {self._loader_hint()}")
            if key != self._current:
                if key in self._seen:
                    raise GeoTiffError(f"the windows of {key[0]} came back after another scene's: the test "
                                       "loader must keep scene_eval_windows' order (no shuffling, one process)")
                self._finish()
                c0, r0, h, w = s["box"]
                self._current, self._seen[key] = key, 0
                self._gt = self._ground_truth(s)
                self._buf = BlendBuffer(len(self.classes), h, s["shape"][0], 0, w)
            c0, r0, _, _ = s["box"]
            col, row = inp["window"][0] - c0, inp["window"][1] - r0
            expected = s["windows"][self._seen[key]] if self._seen[key] < len(s["windows"]) else None
            if expected != (row, col):
                raise GeoTiffError(f"{key[0]} window at (row {row}, col {col}) of the scene box came where "
                                   f"{expected} was expected: {self._loader_hint()}")
            logits = out["sem_seg"].detach().float().cpu().numpy()
            if logits.shape != (len(self.classes),) + tuple(s["shape"]):
                raise GeoTiffError(f"the model's sem_seg is {tuple(logits.shape)}, expected "
                                   f"{(len(self.classes),) + tuple(s['shape'])} (classes of {self.dataset_name}, "
                                   "window): evaluate without resizing augmentations")
            while self._buf.top < row:  # one flush gives at most the buffer's rows
                self._score(self._buf.flush(row))
            th, tw = s["shape"]
            # every pixel counts as valid data: pixels without data carry the ignore label in the ground
            # truth, so prediction's valid mask (which drops them from the blend) changes no scored pixel
            self._buf.add(row, col, logits, self._weights[:th, :tw], np.ones((th, tw), bool))
            self._seen[key] += 1

    def evaluate(self):
        self._finish()
        missing = [k[0] for k in self._scenes if k not in self._seen]
        if missing:
            raise GeoTiffError(f"scene-scale evaluation of {self.dataset_name}: no window of {missing} came: "
                               f"{self._loader_hint()}")
        conf, k = self._conf, len(self.classes)
        tp = np.diag(conf).astype(np.float64)
        union = conf.sum(0) + conf.sum(1) - tp
        present = conf.sum(1) > 0
        iou = np.divide(tp, union, out=np.full(k, np.nan), where=union > 0)
        res = {"mIoU": 100 * float(np.nanmean(iou[present])) if present.any() else float("nan"),
               "pACC": 100 * float(tp.sum() / max(conf.sum(), 1))}
        res.update({f"IoU-{c}": 100 * float(v) for c, v in zip(self.classes, iou)})
        logger.info("scene-scale evaluation of %s (%d scenes, tile %d, overlap %d): %s", self.dataset_name,
                    len(self._scenes), self.tile, self.overlap, res)
        return {"sem_seg": res}


@torch.no_grad()
def evaluate_scene_semantic(model, dataset_name: str, mapper=None, *, tile: int | None = None,
                            overlap: int | None = None) -> dict:
    """``{"sem_seg": {"mIoU", "pACC", "IoU-<class>", ...}}`` of ``model`` over the scenes of
    ``dataset_name`` (the loop a trainer's ``inference_on_dataset`` runs with the config above)."""
    from d2geo.data.mapper import GeoDatasetMapper

    mapper = mapper or GeoDatasetMapper(is_train=False, augmentations=[])
    evaluator = SceneSemSegEvaluator(dataset_name, tile=tile, overlap=overlap, mapper=mapper)
    was_training = model.training
    model.eval()
    try:
        for q in scene_eval_windows(dataset_name, tile=tile, overlap=overlap):
            inp = mapper(q)
            evaluator.process([inp], model([inp]))
    finally:
        model.train(was_training)
    return evaluator.evaluate()
