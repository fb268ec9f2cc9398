"""``apply_encoder``: put an encoder fragment of this folder into a task config.

A task config applies its family's fragment in one call, next to the fragment's import::

    from ..common.encoders.dinov2 import encoder as _enc
    from ..common.encoders.apply import apply_encoder as _apply_encoder
    ...
    _apply_encoder(_enc, model, dataloader, optimizer, layers=_enc.taps)

(functions imported into a config are bound to ``_`` names, as the fragment is: they are no
part of the config, which holds only its public dicts.) Not a fragment itself.
"""


def apply_encoder(enc, model, dataloader, optimizer, *, net=None, layers=None):
    """Set, from the fragment ``enc``, what every task config takes from it:

    * the ``GeoBackbone`` arguments ``enc.backbone`` on ``net`` (default
      ``model.backbone.net``; e.g. ``model.backbone.bottom_up`` under detectron2's FPN), and
      its ``layers`` when given (e.g. ``enc.taps`` for a multi-layer pyramid);
    * ``model.pixel_mean`` / ``model.pixel_std``;
    * ``dataloader.train.mapper.bands`` (the test mapper's bands follow it);
    * ``optimizer.params.lr_decay_rate``.

    Anything else (batch size, learning rate, temporal fold, ...) stays in the config.
    """
    net = model.backbone.net if net is None else net
    net.update(enc["backbone"])
    if layers is not None:
        net.layers = layers
    model.pixel_mean = enc["pixel_mean"]
    model.pixel_std = enc["pixel_std"]
    dataloader.train.mapper.bands = enc["bands"]
    optimizer.params.lr_decay_rate = enc["lr_decay_rate"]


def hierarchical_fragment(name, *, drop_path_rate):
    """The fragment of a hierarchical encoder (Swin, ConvNeXt, ResNet) whose four stages,
    strides 4..32, detectron2's ``FPN`` takes directly as ``res2..res5``: every stage tapped
    without the final norm, bands and statistics from ``name``'s pretrained table entry."""
    from d2geo.encoders import get_pretrained_cfg

    pre = get_pretrained_cfg(name)
    return dict(
        backbone=dict(
            encoder=name,
            pretrained=True,
            weights=None,
            layers=(0, 1, 2, 3),
            norm=False,
            drop_path_rate=drop_path_rate,
            encoder_kwargs=dict(bands=list(pre.bands)),
        ),
        in_features=["res2", "res3", "res4", "res5"],
        bands=list(pre.bands),
        pixel_mean=list(pre.mean),
        pixel_std=list(pre.std),
        lr_decay_rate=0.9,
    )
