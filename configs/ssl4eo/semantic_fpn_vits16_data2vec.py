"""Semantic FPN with the SSL4EO-S12 data2vec ViT-S/16 on 13-band Sentinel-2 L1C.

``semantic_fpn_vits16.py`` with the data2vec encoder (``configs/common/encoders/ssl4eo.py``:
``data2vec``). Its weights must be downloaded by hand (Google Drive): set
``model.backbone.net.weights=/path/to/the/backbone.pth``.
"""
from ..common.encoders.ssl4eo import data2vec as _enc
from .semantic_fpn_vits16 import dataloader, lr_multiplier, model, optimizer, train

model.backbone.net.update(_enc.backbone)
model.backbone.net.layers = _enc.taps
model.pixel_mean = _enc.pixel_mean
model.pixel_std = _enc.pixel_std
dataloader.train.mapper.bands = _enc.bands
optimizer.params.lr_decay_rate = _enc.lr_decay_rate

train.output_dir = "./output/ssl4eo/semantic_fpn_vits16_data2vec"
