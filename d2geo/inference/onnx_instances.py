"""Instance model files (Mask R-CNN) without torch: the graph's raw detections made into what
detectron2's ``detector_postprocess`` makes of them, with numpy.

An instance model file's graph is detectron2's ``GeneralizedRCNN.inference(...,
do_postprocess=False)`` traced with ``TracingAdapter`` (the export side:
:func:`~d2geo.inference.export_file.export_model_file`); its outputs are named
:data:`OUTPUTS`: ``boxes`` (N, 4) x0, y0, x1, y1 in window pixels (clipped), ``classes`` (N,),
``mask_probs`` (N, 1, M, M) per-box mask probabilities and ``scores`` (N,) (detections under
the model's ``test_score_thresh`` are already dropped by the graph, after NMS).
:func:`postprocess` keeps boxes with a positive width and height and pastes each mask into the
window as detectron2's ``paste_masks_in_image`` does on the CPU (bilinear ``grid_sample``,
``align_corners=False``, zeros outside the mask, ``>= mask_threshold``), giving
:class:`ArrayInstances`, which :func:`~d2geo.inference.instances.window_instances` reads
like detectron2's ``Instances``.
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["OUTPUTS", "ArrayInstances", "paste_masks", "postprocess"]

#: the outputs of an instance model file's graph, in this order
OUTPUTS = ("boxes", "classes", "mask_probs", "scores")


class ArrayInstances:
    """Detections of one window as numpy arrays, with the names of detectron2's ``Instances``."""

    array_backend = "numpy"

    def __init__(self, image_size, **fields):
        self.image_size = tuple(image_size)
        self._fields = fields

    def __len__(self) -> int:
        return len(next(iter(self._fields.values()))) if self._fields else 0

    def has(self, name: str) -> bool:
        return name in self._fields

    def __getattr__(self, name):
        fields = self.__dict__.get("_fields", {})
        if name in fields:
            return fields[name]
        raise AttributeError(name)


def _grid_sample(mask: np.ndarray, gx: np.ndarray, gy: np.ndarray) -> np.ndarray:
    """torch's ``grid_sample`` (bilinear, zeros, ``align_corners=False``) of one (M, M) mask at
    the normalised columns ``gx`` (w,) and rows ``gy`` (h,) -> (h, w)."""
    mh, mw = mask.shape
    x = ((gx + 1) * mw - 1) / 2
    y = ((gy + 1) * mh - 1) / 2
    x0, y0 = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
    wx1, wy1 = (x - x0).astype(np.float32), (y - y0).astype(np.float32)
    wx0, wy0 = 1 - wx1, 1 - wy1
    padded = np.zeros((mh + 2, mw + 2), np.float32)  # zeros outside: index -1 and M land on the border
    padded[1:-1, 1:-1] = mask
    xi0, xi1 = np.clip(x0 + 1, 0, mw + 1), np.clip(x0 + 2, 0, mw + 1)
    yi0, yi1 = np.clip(y0 + 1, 0, mh + 1), np.clip(y0 + 2, 0, mh + 1)
    out = (padded[yi0][:, xi0] * (wy0[:, None] * wx0[None]) + padded[yi0][:, xi1] * (wy0[:, None] * wx1[None])
           + padded[yi1][:, xi0] * (wy1[:, None] * wx0[None]) + padded[yi1][:, xi1] * (wy1[:, None] * wx1[None]))
    return out


def paste_masks(masks: np.ndarray, boxes: np.ndarray, height: int, width: int,
                threshold: float = 0.5) -> np.ndarray:
    """(N, M, M) mask probabilities in their boxes pasted into (N, height, width) bool masks."""
    out = np.zeros((len(masks), height, width), bool)
    for k, (m, (x0, y0, x1, y1)) in enumerate(zip(masks.astype(np.float32), boxes.astype(np.float32))):
        c0, r0 = max(int(math.floor(x0)) - 1, 0), max(int(math.floor(y0)) - 1, 0)
        c1, r1 = min(int(math.ceil(x1)) + 1, width), min(int(math.ceil(y1)) + 1, height)
        if c1 <= c0 or r1 <= r0:
            continue
        gx = (np.arange(c0, c1, dtype=np.float32) + np.float32(0.5) - x0) / (x1 - x0) * 2 - 1
        gy = (np.arange(r0, r1, dtype=np.float32) + np.float32(0.5) - y0) / (y1 - y0) * 2 - 1
        out[k, r0:r1, c0:c1] = _grid_sample(m, gx.astype(np.float32), gy.astype(np.float32)) >= threshold
    return out


def postprocess(raw: dict, height: int, width: int, mask_threshold: float = 0.5) -> ArrayInstances:
    """The graph's outputs (``raw``: :data:`OUTPUTS` -> arrays) of one (height, width) window as
    detectron2's ``detector_postprocess`` returns them."""
    boxes = np.asarray(raw["boxes"], np.float32).reshape(-1, 4).copy()
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, width)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, height)
    keep = (boxes[:, 2] - boxes[:, 0] > 0) & (boxes[:, 3] - boxes[:, 1] > 0)
    boxes = boxes[keep]
    masks = np.asarray(raw["mask_probs"], np.float32)[keep][:, 0]
    return ArrayInstances((height, width), pred_boxes=boxes, scores=np.asarray(raw["scores"], np.float32)[keep],
                          pred_classes=np.asarray(raw["classes"]).astype(np.int64)[keep],
                          pred_masks=paste_masks(masks, boxes, height, width, mask_threshold))
