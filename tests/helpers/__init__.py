"""Helpers the tests share (``from helpers import ...``; pytest.ini puts tests/ on the path).

Fixtures stay in ``tests/conftest.py``; what the benchmarks use too (the upstream reference
wheels, ``rel_err``, tiny detectron2 heads) is in the repository's ``testkit`` package.
"""
from testkit import rel_err

from .models import (
    BANDS5,
    TINY_DINO,
    dino_backbone,
    make_sample,
    tiny_mask_rcnn,
    tiny_rcnn_heads,
    tiny_segmentor,
    tiny_semseg_head,
)
from .rasters import TERRAMIND_EXAMPLES, UTM, write_tif
from .upstream import (
    claymodel,
    load_upstream_module,
    or_skip,
    terratorch_prithvi,
    terratorch_terramind,
    torchgeo_copernicusfm,
    torchgeo_croma,
)

__all__ = [
    "rel_err", "BANDS5", "TINY_DINO", "dino_backbone", "make_sample", "tiny_mask_rcnn", "tiny_rcnn_heads",
    "tiny_segmentor", "tiny_semseg_head", "TERRAMIND_EXAMPLES", "UTM", "write_tif", "claymodel",
    "load_upstream_module", "or_skip", "terratorch_prithvi", "terratorch_terramind", "torchgeo_copernicusfm",
    "torchgeo_croma",
]
