"""Draw the windows and regions of a scene split over a scene (docs/scenes.md)::

    python tools/show_split.py --split-file datasets/.../d2geo_scenes_semantic_split.geojson \\
        --scene datasets/.../scene_0_32631.tif --labels datasets/.../semantic.gpkg --out split.png

The split file is the one ``register_geo_scenes(..., split=..., output_dir=...)`` writes;
regions are filled and outlined, windows outlined, in one colour per part (train orange,
val blue, in the order of their names); with ``--labels``, the labels each drawn window carries
(burnt as training burns them) are filled by class (``--class-key``, default the ``class``
column) inside the drawn windows: yellow, green, cyan, white, ... in the sorted order of the
class names. The PNG's text chunk ``d2geo:split_parts`` names every colour.
"""
from __future__ import annotations

import argparse
import logging
import sys


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--split-file", required=True)
    p.add_argument("--scene", required=True)
    p.add_argument("--labels", default=None, help="a vector label file: its labels are drawn inside the windows")
    p.add_argument("--class-key", default=None, help="the label column to colour by (default: 'class' if present)")
    p.add_argument("--out", required=True, help="the PNG to write")
    p.add_argument("--max-side", type=int, default=1024)
    p.add_argument("--max-windows", type=int, default=None, help="draw at most this many windows per part")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from d2geo.data.scenes.preview import draw_split

    counts = draw_split(args.split_file, args.scene, args.out, max_side=args.max_side, labels=args.labels,
                        max_windows=args.max_windows, class_key=args.class_key)
    logging.getLogger("show_split").info("wrote %s (windows drawn: %s)", args.out, counts)
    return 0


def console_main() -> None:
    """The console script ``d2geo-show-split``."""
    sys.exit(main())


if __name__ == "__main__":
    console_main()
