#!/usr/bin/env python
"""Draw the windows and regions of a scene split over a scene (docs/scenes.md).

The same as the console script ``d2geo-show-split``; the flags are in
:mod:`d2geo.cli.show_split` (``--help``). Needs d2geo installed (``pip install -e .``).
"""
from d2geo.cli.show_split import console_main

if __name__ == "__main__":
    console_main()
