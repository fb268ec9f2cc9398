"""tools/visualize.py: colour composites and ground truth / predictions drawn on real GeoTIFFs."""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("detectron2", reason="detectron2 is not installed: see README for installing it from source")
pytest.importorskip("rasterio")
from detectron2.data.datasets import load_coco_json  # noqa: E402
from detectron2.structures import Boxes, Instances  # noqa: E402
from PIL import Image  # noqa: E402

from d2geo.data.synthetic.generator import make_synthetic_dataset  # noqa: E402

TOOLS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools")


@pytest.fixture(scope="module")
def vis():
    sys.path.insert(0, TOOLS)
    try:
        import visualize
    finally:
        sys.path.remove(TOOLS)
    return visualize


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return make_synthetic_dataset(tmp_path_factory.mktemp("vis"), num_train=4, num_val=2, size=96, seed=7,
                                  cloud_prob=0.0, nodata_prob=0.0)


def _dicts(ds):
    base = ds.split_dir("train")
    dicts = load_coco_json(ds.coco_json("train"), os.path.join(base, "images"))
    for d in dicts:
        tile = os.path.basename(d["file_name"]).split(".")[0]
        d["sem_seg_file_name"] = os.path.join(base, "masks", f"{tile}_mask.tif")
    return dicts


def test_composite_stretch_and_nodata(vis):
    img = np.stack([np.linspace(0, 1, 100).reshape(10, 10) * k for k in (1.0, 2.0, 3.0, 4.0)]).astype(np.float32)
    valid = np.ones((10, 10), bool)
    valid[0, 0] = False
    rgb = vis.composite(img, (3, 1, 0), valid=valid, percentiles=(0, 100))
    assert rgb.dtype == np.uint8 and rgb.shape == (10, 10, 3)
    assert rgb[0, 0].tolist() == [0, 0, 0]  # no data is black
    assert rgb[-1, -1].tolist() == [255, 255, 255] and rgb[0, 1, 0] < 5  # stretched to the full range
    # a time series shows its first date
    np.testing.assert_array_equal(vis.composite(np.stack([img, img * 0], 1), (3, 1, 0), percentiles=(0, 100)),
                                  vis.composite(img, (3, 1, 0), percentiles=(0, 100)))
    with pytest.raises(ValueError, match="out of range"):
        vis.composite(img, (0, 1, 7))


def test_ground_truth_is_drawn_where_annotations_are(vis, synth, tmp_path):
    d = max(_dicts(synth), key=lambda x: len(x["annotations"]))
    assert len(d["annotations"]) >= 2
    plain = vis.render_dataset_dict({"file_name": d["file_name"]})
    inst = vis.render_dataset_dict({"file_name": d["file_name"], "annotations": d["annotations"]})
    assert plain.shape == inst.shape == (96, 96, 3)
    changed = np.abs(plain.astype(int) - inst.astype(int)).sum(-1) > 30
    inside = np.zeros((96, 96), bool)
    near = np.zeros((96, 96), bool)  # boxes grown by the size of the class label text
    for a in d["annotations"]:
        x, y, w, h = (int(round(v)) for v in a["bbox"])
        inside[max(y - 1, 0):y + h + 2, max(x - 1, 0):x + w + 2] = True
        near[max(y - 16, 0):y + h + 17, max(x - 16, 0):x + w + 17] = True
    assert changed[inside].mean() > 0.3  # the instances are drawn ...
    assert changed[~near].mean() < 0.01  # ... and nothing far from them
    # false colour: NIR in the red channel makes vegetation bright red
    false = vis.render_dataset_dict({"file_name": d["file_name"]}, bands=("nir_narrow", "red", "green"))
    assert not np.array_equal(false, plain)
    # semantic ground truth changes the pixels of every class present
    sem = vis.render_dataset_dict({"file_name": d["file_name"], "sem_seg_file_name": d["sem_seg_file_name"]})
    assert (np.abs(sem.astype(int) - plain.astype(int)).sum(-1) > 0).mean() > 0.5
    path = str(tmp_path / "gt.png")
    vis.save_png(path, inst)
    assert np.array_equal(np.asarray(Image.open(path)), inst)


def test_predictions_are_drawn(vis, synth):
    d = _dicts(synth)[0]
    plain = vis.render_dataset_dict({"file_name": d["file_name"]})
    inst = Instances((96, 96))
    inst.pred_boxes = Boxes(torch.tensor([[10.0, 10.0, 40.0, 30.0]]))
    inst.scores = torch.tensor([0.9])
    inst.pred_classes = torch.tensor([0])
    out = vis.render_dataset_dict({"file_name": d["file_name"]}, predictions={"instances": inst})
    diff = np.abs(out.astype(int) - plain.astype(int)).sum(-1) > 30
    assert diff[9:32, 9:42].any() and not diff[50:, 50:].any()


def test_cli_writes_pngs_for_a_registered_dataset(vis, synth, tmp_path):
    out = tmp_path / "png"
    written = vis.main(["--synthetic-root", synth.root, "--dataset", "d2geo_geotiff_synth_det_val",
                        "--out", str(out), "--num", "2"])
    assert len(written) == 2 and all(os.path.exists(p) for p in written)
    arr = np.asarray(Image.open(written[0]))
    assert arr.shape == (96, 96, 3) and arr.std() > 5
    one = vis.main(["--image", synth.splits["val"][0], "--mask",
                    os.path.join(synth.split_dir("val"), "masks", "tile_00004_mask.tif"),
                    "--bands", "nir_narrow,red,green", "--out", str(tmp_path / "one")])
    assert len(one) == 1 and os.path.exists(one[0])


def test_cli_draws_model_predictions(vis, synth, tmp_path):
    """--config-file/--weights: the model's instances are drawn over the composite."""
    import textwrap

    (tmp_path / "vis_box_model.py").write_text(textwrap.dedent('''
        import torch
        import torch.nn as nn
        from detectron2.structures import Boxes, Instances

        class BoxModel(nn.Module):
            def __init__(self):
                super().__init__()
                self.box = nn.Parameter(torch.zeros(4))

            def forward(self, batched_inputs):
                outs = []
                for d in batched_inputs:
                    assert d["image"].shape[0] == 6 and "metadata" in d
                    inst = Instances(tuple(d["image"].shape[-2:]))
                    inst.pred_boxes = Boxes(self.box.detach()[None])
                    inst.scores = torch.tensor([0.9])
                    inst.pred_classes = torch.tensor([0])
                    outs.append({"instances": inst})
                return outs
    '''))
    cfg = tmp_path / "cfg.py"
    cfg.write_text(textwrap.dedent(f'''
        import sys
        sys.path.insert(0, {str(tmp_path)!r})
        from detectron2.config import LazyCall as L
        from vis_box_model import BoxModel
        model = L(BoxModel)()
    '''))
    weights = str(tmp_path / "w.pth")
    torch.save({"model": {"box": torch.tensor([50.0, 50.0, 90.0, 90.0])}}, weights)
    image = synth.splits["val"][0]
    plain = vis.main(["--image", image, "--out", str(tmp_path / "a")])
    pred = vis.main(["--image", image, "--config-file", str(cfg), "--weights", weights, "--out", str(tmp_path / "b")])
    a, b = (np.asarray(Image.open(p[0])).astype(int) for p in (plain, pred))
    diff = np.abs(a - b).sum(-1) > 30
    assert diff[49:92, 49:92].any() and not diff[:40, :40].any()  # the loaded box, not the zero init
