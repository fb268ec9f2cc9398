"""Semantic FPN with CROMA base (joint Sentinel-2 L1C + Sentinel-1 GRD, 8-pixel patches).

Weights by name (``pretrained=True``, see ``configs/common/encoders/croma.py``):
``CROMA_base-0238d814.pt`` of ``torchgeo/croma`` on the Hugging Face Hub.

Data: one GeoTIFF per modality on one grid, registered as ``{modality: path}`` images, e.g.::

    register_geo_semseg("geo_seg_train", [({"S2L1C": s2, "S1GRD": s1}, label), ...],
                        stuff_classes=[...])

The mapper stacks the files (``d2geo.data.geotiff.read_modalities``) into the 14 channels
``S2L1C:B01 .. S2L1C:B12, S1GRD:VV, S1GRD:VH`` the encoder takes. Four of the joint encoder's
six blocks are tapped; at stride 8 the pyramid resamples them to strides 4, 8, 16, 32.
"""
from ..common.data.geo_semseg import dataloader
from ..common.encoders.apply import apply_encoder as _apply_encoder
from ..common.encoders.croma import encoder as _enc
from ..common.models.semantic_fpn_geo import model
from ..common.optim import AdamW as optimizer
from ..common.schedule import step as lr_multiplier
from ..common.train import train

_apply_encoder(_enc, model, dataloader, optimizer, layers=_enc.taps)
model.backbone.scale_factors = (2.0, 1.0, 0.5, 0.25)
model.sem_seg_head.num_classes = 10

dataloader.train.total_batch_size = 8

optimizer.lr = 1e-4

train.output_dir = "./output/croma/semantic_fpn_base"
train.max_iter = 20000
