"""The split picture (tools/show_split.py --labels): the labels each drawn window carries are
filled by class inside the windows, and nothing is drawn outside them."""
from __future__ import annotations

import numpy as np

import scene_fixtures  # this folder's helpers and fixtures
from scene_fixtures import ZONES, write_cog
from test_scenes_sampling import _labels

_clean_catalog = scene_fixtures._clean_catalog


def test_split_picture_fills_the_labels_of_the_drawn_windows_by_class(tmp_path):
    from PIL import Image

    from d2geo.data.scenes import register_geo_scenes
    from d2geo.data.scenes.preview import LABEL_COLOURS, draw_split
    from detectron2.data import MetadataCatalog

    crs, origin = ZONES[0]
    scene = write_cog(tmp_path / "scene.tif", crs=crs, origin=origin, size=600)
    labels = _labels(tmp_path, [scene], [[((0, 0, 300, 600), {"c": "a"}), ((300, 0, 600, 600), {"c": "b"})]])
    names = register_geo_scenes("_pic", [scene], labels, task="semantic", classes=["a", "b"], class_key="c",
                                window=40, sampler="random", count=12, seed=1,
                                split={"blocks": 1500, "fractions": {"train": 0.5, "val": 0.5}},
                                output_dir=str(tmp_path / "run"))
    split_file = MetadataCatalog.get(names[0]).split_file
    plain, filled = tmp_path / "plain.png", tmp_path / "labels.png"
    counts = draw_split(split_file, scene, str(plain), max_side=600)
    assert counts == draw_split(split_file, scene, str(filled), max_side=600, labels=labels, class_key="c")
    a = np.asarray(Image.open(plain).convert("RGB")).astype(int)
    b = np.asarray(Image.open(filled).convert("RGB")).astype(int)
    assert "labels: a: %s, b: %s" % (LABEL_COLOURS[0], LABEL_COLOURS[1]) in Image.open(filled).text["d2geo:split_parts"]
    import json

    windows = [f["properties"]["window"] for f in json.load(open(split_file))["features"]
               if f["properties"]["kind"] == "window"]
    inside = np.zeros(a.shape[:2], dtype=bool)
    for c, r, w, h in windows:
        inside[r:r + h, c:c + w] = True
    assert inside.any() and (~inside).any()
    # outside the windows the pictures agree (up to the palette); inside, the labels are filled
    diff = np.abs(a - b).sum(axis=2)
    assert diff[~inside].mean() < 15 < 60 < diff[inside].mean(), (diff[~inside].mean(), diff[inside].mean())
    yellow, green = np.array(LABEL_COLOURS[0]), np.array(LABEL_COLOURS[1])
    for c, r, w, h in windows:
        y, x = r + h // 2, c + w // 2
        alpha = 170 / 255  # the fill's opacity: undo the blend to see the colour drawn
        drawn = (b[y, x] - (1 - alpha) * a[y, x]) / alpha
        near, far = (yellow, green) if x < 300 else (green, yellow)
        assert np.abs(drawn - near).sum() < 60 < np.abs(drawn - far).sum(), (c, r, drawn)


def test_the_docs_picture_is_the_one_its_command_makes():
    """docs/scenes.md's picture shows windows and their labels, and its page gives the command
    that writes it (with --labels, into docs/images/), which the tool's parser accepts."""
    import os
    import re
    import shlex

    from PIL import Image

    from d2geo.cli.show_split import build_parser

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    page = open(os.path.join(root, "docs", "scenes.md"), encoding="utf-8").read()
    commands = [line.split("  #")[0] for block in re.findall(r"```bash\n(.*?)```", page, re.S)
                for line in block.splitlines() if line.startswith("python tools/show_split.py")]
    assert len(commands) == 1, commands
    args = build_parser().parse_args(shlex.split(commands[0])[2:])
    assert args.labels and args.out == "docs/images/scenes_split.png" and "](images/scenes_split.png)" in page
    png = os.path.join(root, args.out)
    assert os.path.getsize(png) < 400_000
    legend = Image.open(png).text["d2geo:split_parts"]
    assert legend.startswith("train: ") and "val: " in legend and "; labels: " in legend, legend
