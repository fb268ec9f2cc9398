#!/usr/bin/env python
"""Run a trained d2geo model over a whole region: :mod:`d2geo.cli.predict_region` (``--help``)."""
from d2geo.cli.predict_region import build_parser, main  # noqa: F401

if __name__ == "__main__":
    main()
