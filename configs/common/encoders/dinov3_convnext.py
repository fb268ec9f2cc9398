"""DINOv3 ConvNeXt-Base (distilled on LVD-1689M, RGB) for the task configs.

``pretrained=True`` loads timm's copy on the Hugging Face Hub
(``timm/convnext_base.dinov3_lvd1689m``); Meta's ``.pth`` file and the Hub's transformers file
(``facebook/dinov3-convnext-base-pretrain-lvd1689m``) load too, by path:
``model.backbone.bottom_up.weights=/path/to/file``. ``dinov3_convnext_{tiny,small,large}`` are
the other sizes (``encoder=...``). Bands and the ImageNet statistics come from the pretrained
table (``d2geo.encoders.get_pretrained_cfg("dinov3_convnext_base")``).

A ConvNeXt is hierarchical, like Satlas' Swin: ``backbone`` taps its four stages (strides
4..32, ``res2..res5``), which detectron2's ``FPN`` takes directly. ``norm=False``: the raw
stage outputs (the final norm belongs to the last stage only).
"""
from .apply import hierarchical_fragment as _fragment

_name = "dinov3_convnext_base"
encoder = _fragment(_name, drop_path_rate=0.2)
