"""tools/visualize.py and d2geo.data.render: composites by band name, panels side by side
(image | ground truth | prediction), class colours with a legend, enlargement."""
from __future__ import annotations

import os
import textwrap

import numpy as np
import pytest
import torch

pytest.importorskip("detectron2", reason="detectron2 is not installed: see README for installing it from source")
pytest.importorskip("rasterio")
from detectron2.data.datasets import load_coco_json  # noqa: E402
from detectron2.structures import Boxes, Instances  # noqa: E402
from PIL import Image  # noqa: E402

from d2geo.data.geotiff import GeoTiffError  # noqa: E402
from d2geo.data.render import class_colours, composite, composite_channels, layout_panels  # noqa: E402
from d2geo.data.synthetic.generator import SEMSEG_CLASSES, make_synthetic_dataset  # noqa: E402
from d2geo.data.synthetic import register_synthetic_root  # noqa: E402

SIZE = 64


@pytest.fixture(scope="module")
def vis():
    from d2geo.cli import visualize

    return visualize


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return make_synthetic_dataset(tmp_path_factory.mktemp("vis") / "synth", num_train=4, num_val=2, size=SIZE, seed=7,
                                  cloud_prob=0.0, nodata_prob=0.0)


def _dicts(ds, split="train"):
    base = ds.split_dir(split)
    dicts = load_coco_json(ds.coco_json(split), os.path.join(base, "images"))
    for d in dicts:
        d["sem_seg_file_name"] = ds.mask_file(split, d["file_name"])
    return dicts


def _png(path):
    return np.asarray(Image.open(path).convert("RGB")).astype(int)


def test_composite_stretch_and_nodata():
    img = np.stack([np.linspace(0, 1, 100).reshape(10, 10) * k for k in (1.0, 2.0, 3.0, 4.0)]).astype(np.float32)
    valid = np.ones((10, 10), bool)
    valid[0, 0] = False
    rgb = composite(img, (3, 1, 0), valid=valid, percentiles=(0, 100))
    assert rgb.dtype == np.uint8 and rgb.shape == (10, 10, 3)
    assert rgb[0, 0].tolist() == [0, 0, 0]  # no data is black
    assert rgb[-1, -1].tolist() == [255, 255, 255] and rgb[0, 1, 0] < 5  # stretched to the full range
    # a time series shows its first date
    np.testing.assert_array_equal(composite(np.stack([img, img * 0], 1), (3, 1, 0), percentiles=(0, 100)),
                                  composite(img, (3, 1, 0), percentiles=(0, 100)))
    with pytest.raises(ValueError, match="out of range"):
        composite(img, (0, 1, 7))


def test_composites_by_band_name_across_sensors():
    hls = ["blue", "green", "red", "nir_narrow", "swir_1", "swir_2"]
    assert composite_channels(hls, "true")[0] == [2, 1, 0]
    assert composite_channels(hls, "false")[0] == [3, 2, 1]
    assert composite_channels(hls, "swir")[0] == [5, 3, 2]
    s2 = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12"]
    assert composite_channels(s2, "true", "sentinel-2-l2a") == ([3, 2, 1], ["B04", "B03", "B02"])
    assert composite_channels(s2, "false", "sentinel-2-l2a")[1] == ["B08", "B04", "B03"]
    assert composite_channels(s2, "swir", "sentinel-2-l2a")[1] == ["B12", "B8A", "B04"]
    assert composite_channels(s2, "B12,B11,B04")[0] == [11, 10, 3]
    with pytest.raises(GeoTiffError, match="needs a 'red' band.*--band-names"):
        composite_channels(["band1", "band2", "band3"], "true")


def test_panels_show_ground_truth_and_prediction_separately_with_a_legend(vis, synth, tmp_path):
    d = {k: v for k, v in _dicts(synth)[0].items() if k != "annotations"}  # the class map alone
    gt = vis.render_sample(d)[0][1][1]  # (title, picture) of the ground-truth panel
    # a prediction of all "water" (class 1) in the left half and "field" (2) in the right half
    logits = torch.zeros(4, SIZE, SIZE)
    logits[1, :, : SIZE // 2] = 5
    logits[2, :, SIZE // 2:] = 5
    names = list(SEMSEG_CLASSES)
    panels, legend = vis.render_sample(d, class_names=names, predictions={"sem_seg": logits},
                                       prediction_names=names, scale=2, alpha=1.0)
    titles = [t for t, _ in panels]
    assert titles[0].startswith("true colour: red, green, blue") and titles[-1] == "prediction"
    assert titles[1].startswith("ground truth")
    image, gt_panel, pred = (p for _, p in panels)
    assert image.shape == gt_panel.shape == pred.shape == (2 * SIZE, 2 * SIZE, 3)
    water, field = np.array(class_colours(names)[1]), np.array(class_colours(names)[2])
    # alpha 1: the prediction panel is exactly the predicted class colours, left and right
    assert (pred[:, : SIZE] == water).all() and (pred[:, SIZE:] == field).all()
    # the ground-truth panel shows the label GeoTIFF, not the prediction
    from d2geo.data.geotiff import read_label

    labels = np.repeat(np.repeat(read_label(d["sem_seg_file_name"]), 2, 0), 2, 1)
    colours = np.array(class_colours(names))
    np.testing.assert_array_equal(gt_panel, colours[labels])
    assert not np.array_equal(gt_panel, pred) and not np.array_equal(image, gt_panel)
    assert gt.shape[0] >= 256  # default scale enlarges a 64 px tile to 256 px
    assert [e.name for e in legend] == names and [tuple(e.colour) for e in legend] == class_colours(names)
    # the picture: panels side by side and a legend of coloured boxes below them
    pic = layout_panels([panels], legend=legend)
    rows = np.nonzero((np.abs(pic - water).sum(-1) == 0).any(1))[0]
    assert rows.max() > 2 * SIZE + 20  # the water swatch of the legend sits below the panels


def test_instances_ground_truth_and_predictions_in_their_own_panels(vis, synth):
    d = max(_dicts(synth), key=lambda x: len(x["annotations"]))
    d.pop("sem_seg_file_name")
    inst = Instances((SIZE, SIZE))
    inst.pred_boxes = Boxes(torch.tensor([[10.0, 10.0, 40.0, 30.0], [5.0, 40.0, 20.0, 60.0]]))
    inst.scores = torch.tensor([0.9, 0.3])  # the second is below the 0.5 threshold
    inst.pred_classes = torch.tensor([0, 0])
    panels, legend = vis.render_sample(d, thing_names=["building"], predictions={"instances": inst},
                                       prediction_names=["building"], scale=1)
    (_, image), (gt_title, gt), (pred_title, pred) = panels
    assert gt_title == f"ground truth: {len(d['annotations'])} objects"
    assert pred_title == "prediction: 1 of 2 with score >= 0.5"
    changed_gt = np.abs(gt.astype(int) - image.astype(int)).sum(-1) > 30
    changed_pred = np.abs(pred.astype(int) - image.astype(int)).sum(-1) > 30
    boxes = np.zeros((SIZE, SIZE), bool)
    for a in d["annotations"]:
        x, y, w, h = (int(round(v)) for v in a["bbox"])
        boxes[max(y - 1, 0):y + h + 2, max(x - 1, 0):x + w + 2] = True
    assert changed_gt[boxes].mean() > 0.3 and changed_gt[~boxes].mean() == 0  # the annotations, nothing else
    assert changed_pred[10, 10:40].all() and changed_pred[9:31, 9:41].sum() == changed_pred.sum()
    assert not changed_pred[40:, :25].any()  # the low-score box is not drawn
    assert [(e.group, e.name) for e in legend] == [("objects", "building")]


def test_cli_dataset_scale_and_contact_sheet(vis, synth, tmp_path):
    names = register_synthetic_root(os.path.dirname(synth.root))  # the cache-folder layout
    assert "d2geo_geotiff_synth_det_val" in names
    one = vis.main(["--dataset", "d2geo_geotiff_synth_seg_val", "--num", "2", "--scale", "1",
                    "--out", str(tmp_path / "s1")])
    four = vis.main(["--dataset", "d2geo_geotiff_synth_seg_val", "--num", "2", "--scale", "4",
                     "--out", str(tmp_path / "s4")])
    assert len(one) == len(four) == 2
    a, b = _png(one[0]), _png(four[0])
    assert a.shape[1] == 2 * SIZE + 18 and b.shape[1] == 2 * 4 * SIZE + 18  # two panels and three gaps
    # the 4x picture holds the composite with every pixel a 4 x 4 square
    from detectron2.data import DatasetCatalog

    d = DatasetCatalog.get("d2geo_geotiff_synth_seg_val")[0]
    image = vis.render_sample(d, scale=1)[0][0][1].astype(int)
    big = np.repeat(np.repeat(image, 4, 0), 4, 1)
    assert any((b[y:y + 4 * SIZE, 6:6 + 4 * SIZE] == big).all() for y in range(0, 80))
    assert Image.open(four[0]).text["legend"].startswith("classes: background = #")
    sheet = vis.main(["--dataset", "d2geo_geotiff_synth_det_val", "--sheet", "--composite", "true,false",
                      "--out", str(tmp_path / "sheet")])
    assert sheet == [str(tmp_path / "sheet" / "sheet.png")]
    assert _png(sheet[0]).shape[0] > 2 * 256  # two samples, one row each
    with pytest.raises(SystemExit, match="no synthetic dataset there"):
        vis.main(["--synthetic-root", str(tmp_path), "--dataset", "x", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="is not registered.*d2geo_synth_seg_val"):
        vis.main(["--dataset", "d2geo_geotiff_synth_det_test", "--out", str(tmp_path)])


def test_help_examples_name_real_datasets_and_options(vis):
    text = vis.build_parser().format_help()
    assert "--dataset d2geo_synth_seg_val" in text and "--composite true,false,swir" in text
    from detectron2.data import DatasetCatalog

    import d2geo.data  # noqa: F401

    for name in ("d2geo_synth_seg_val", "d2geo_synth_det_val"):
        assert name in DatasetCatalog.list()


def test_cli_draws_model_predictions(vis, synth, tmp_path):
    """--config-file/--weights: the model's instances are drawn in the prediction panel."""
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
                    assert d["image"].shape[0] == 3 and "metadata" in d  # --bands chose three
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
    torch.save({"model": {"box": torch.tensor([30.0, 30.0, 60.0, 60.0])}}, weights)
    image = synth.splits["val"][0]
    out = vis.main(["--image", image, "--config-file", str(cfg), "--weights", weights, "--bands", "red,green,nir_narrow",
                    "--scale", "1", "--out", str(tmp_path / "b")])
    panels, _ = vis.render_sample({"file_name": image}, scale=1)
    plain = panels[0][1].astype(int)
    pic = _png(out[0])
    # find the two panels in the picture: the image panel, then the prediction panel to its right
    hits = [(y, x) for y in range(0, 60) for x in range(0, pic.shape[1] - SIZE)
            if (pic[y, x] == plain[0, 0]).all() and (pic[y:y + SIZE, x:x + SIZE] == plain).all()]
    assert len(hits) == 1
    y, x = hits[0]
    pred = pic[y:y + SIZE, x + SIZE + 6:x + 2 * SIZE + 6]
    diff = np.abs(pred - plain).sum(-1) > 30
    assert diff[29:62, 29:62].any() and not diff[:25, :25].any()  # the loaded box, not the zero init
