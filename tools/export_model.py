#!/usr/bin/env python
"""Export a d2geo model to TorchScript or ONNX, check it against eager, print the difference.

    python tools/export_model.py --config-file configs/quickstart/mask_rcnn_tiny.py \
        --format torchscript --output out/mask_rcnn train.init_checkpoint=model_final.pth

The same as the console script ``d2geo-export``; the examples and flags are in
:mod:`d2geo.cli.export` (``--help``). Needs d2geo installed (``pip install -e .``).
"""
from d2geo.cli.export import console_main

if __name__ == "__main__":
    console_main()
