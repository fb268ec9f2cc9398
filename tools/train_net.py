#!/usr/bin/env python
"""Train or evaluate a d2geo model described by a LazyConfig (``.py``) file.

    python tools/train_net.py --config-file configs/quickstart/mask_rcnn_tiny.py

The same as the console script ``d2geo-train``; the examples and flags are in
:mod:`d2geo.cli.train` (``--help``). Needs d2geo installed (``pip install -e .``).
"""
from d2geo.cli.train import main

if __name__ == "__main__":
    main()
