#!/usr/bin/env python
"""Draw GeoTIFF samples as side-by-side panels: image | ground truth | prediction.

    python tools/visualize.py --dataset d2geo_synth_seg_val --num 4 --out vis/seg

The same as the console script ``d2geo-visualize``; the examples and flags are in
:mod:`d2geo.cli.visualize` (``--help``). Needs d2geo installed (``pip install -e .``).
"""
from d2geo.cli.visualize import console_main

if __name__ == "__main__":
    console_main()
