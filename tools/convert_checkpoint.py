#!/usr/bin/env python
"""Convert an upstream encoder checkpoint into a model-zoo ``.pth`` for a d2geo config.

    python tools/convert_checkpoint.py pretrained --config-file configs/prithvi/mask_rcnn_eo_v2_300_tl.py

The same as the console script ``d2geo-convert``; the examples and flags are in
:mod:`d2geo.cli.convert` (``--help``). Needs d2geo installed (``pip install -e .``).
"""
from d2geo.cli.convert import console_main

if __name__ == "__main__":
    console_main()
