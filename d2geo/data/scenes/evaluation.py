"""mIoU over scene windows.

detectron2's ``SemSegEvaluator`` finds each input's ground truth by its ``file_name``; the
windows of a scene share one file, so :class:`WindowSemSegEvaluator` takes the ground truth
from the input itself (the ``sem_seg`` that ``GeoDatasetMapper`` rasterized for the window,
255 where ignored) and otherwise computes exactly detectron2's metrics (mIoU, fwIoU, mACC,
pACC, per-class IoU/ACC). Each pixel is counted once per window that holds it: grid
windows with ``stride = window`` (the default of the evaluation parts) count every pixel
of the region once.
"""
from __future__ import annotations

import logging

import numpy as np
import torch
from detectron2.data import MetadataCatalog
from detectron2.evaluation import SemSegEvaluator

from ..geotiff import GeoTiffError

__all__ = ["WindowSemSegEvaluator"]


class WindowSemSegEvaluator(SemSegEvaluator):
    """``SemSegEvaluator`` for datasets of scene windows (see the module docstring)."""

    def __init__(self, dataset_name: str, distributed: bool = True, output_dir: str | None = None):
        # SemSegEvaluator's __init__ maps file names to label files, which windows do not have
        self._logger = logging.getLogger(__name__)
        self._dataset_name = dataset_name
        self._distributed = distributed
        self._output_dir = output_dir
        self._cpu_device = torch.device("cpu")
        self.input_file_to_gt_file = {}
        self.sem_seg_loading_fn = None
        meta = MetadataCatalog.get(dataset_name)
        self._contiguous_id_to_dataset_id = None
        self._class_names = meta.stuff_classes
        self._num_classes = len(meta.stuff_classes)
        self._ignore_label = meta.get("ignore_label", 255)
        self._compute_boundary_iou = self._num_classes < np.iinfo(np.uint8).max

    def process(self, inputs, outputs):
        for inp, out in zip(inputs, outputs):
            if "sem_seg" not in inp:
                raise GeoTiffError(f"{inp.get('file_name')} window {inp.get('window')} reached the evaluator without "
                                   "its labels: evaluate with GeoDatasetMapper on a dataset of register_geo_scenes")
            pred = np.array(out["sem_seg"].argmax(dim=0).to(self._cpu_device), dtype=int)
            gt = inp["sem_seg"].numpy().astype(int).copy()
            if gt.shape != pred.shape:
                raise GeoTiffError(f"the prediction of {inp.get('file_name')} window {inp.get('window')} is "
                                   f"{pred.shape} but its labels are {gt.shape}: evaluate without resizing "
                                   "augmentations (or with the window size as the test size)")
            gt[gt == self._ignore_label] = self._num_classes
            n = self._num_classes + 1
            self._conf_matrix += np.bincount(n * pred.reshape(-1) + gt.reshape(-1),
                                             minlength=self._conf_matrix.size).reshape(self._conf_matrix.shape)
            if self._compute_boundary_iou:
                b_gt = self._mask_to_boundary(gt.astype(np.uint8))
                b_pred = self._mask_to_boundary(pred.astype(np.uint8))
                self._b_conf_matrix += np.bincount(n * b_pred.reshape(-1) + b_gt.reshape(-1),
                                                   minlength=self._conf_matrix.size).reshape(self._conf_matrix.shape)
