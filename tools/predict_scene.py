#!/usr/bin/env python
"""Run a trained d2geo model over a whole GeoTIFF scene: :mod:`d2geo.cli.predict_scene` (``--help``)."""
from d2geo.cli.predict_scene import build_parser, main  # noqa: F401

if __name__ == "__main__":
    main()
