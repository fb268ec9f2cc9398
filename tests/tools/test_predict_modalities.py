"""Scene and region inference over one file per modality (TerraMind: S2L2A + S1RTC + DEM) on the
real example tiles: the windows are stacked band-wise as read_modalities stacks a sample, the
files' grids are checked first, and the CLIs name the modalities (--input MODALITY=PATH)."""
from __future__ import annotations

import glob
import os

import numpy as np
import pytest
import torch

pytest.importorskip("detectron2", reason="detectron2 is not installed: see README for installing it from source")
rasterio = pytest.importorskip("rasterio")

from d2geo.data.geotiff import read_modalities  # noqa: E402
from d2geo.inference import SceneRequestError, predict_scene  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(ROOT, "configs", "terramind", "semantic_fpn_v1_base.py")
MODS = ("S2L2A", "S1RTC", "DEM")
#: a tiny TerraMind semantic FPN (random weights), as config overrides the CLIs take too
TINY = ["model.backbone.net.encoder=terramind_v1_tiny", "model.backbone.net.pretrained=False",
        "model.backbone.net.drop_path_rate=0.0", "model.backbone.net.layers=[0,1,2,3]",
        "model.backbone.net.encoder_kwargs.embed_dim=32", "model.backbone.net.encoder_kwargs.depth=4",
        "model.backbone.net.encoder_kwargs.num_heads=2", "model.backbone.out_channels=32",
        "model.sem_seg_head.conv_dims=32", "model.sem_seg_head.num_classes=4"]
QUIET = ["--no-progress", "--no-quicklook"]


def _names(root):
    return sorted(os.path.basename(p) for p in glob.glob(os.path.join(root, "S2L2A", "*.tif")))


def _files(root, name, mods=MODS):
    return {m: os.path.join(root, m, name) for m in mods}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny model and its checkpoint."""
    from detectron2.config import LazyConfig, instantiate

    torch.manual_seed(0)
    cfg = LazyConfig.apply_overrides(LazyConfig.load(CONFIG), TINY)
    model = instantiate(cfg.model).eval()
    path = str(tmp_path_factory.mktemp("w") / "tiny_terramind.pth")
    torch.save({"model": model.state_dict()}, path)
    return model, path


def _read(path):
    with rasterio.open(path) as src:
        return src.read(1)


def test_modality_scene_equals_the_model_on_the_stacked_array_and_a_stacked_file(terramind_examples, tiny,
                                                                                 tmp_path):
    model, _ = tiny
    files = _files(terramind_examples, _names(terramind_examples)[0])
    sample = read_modalities(files)
    # one window: the model on the array read_modalities stacks
    one = str(tmp_path / "one.tif")
    predict_scene(model, files, tile=224, overlap=0, semseg_path=one, progress=False, quicklook=False)
    with torch.no_grad():
        direct = model([{"image": torch.as_tensor(sample.image), "height": 224, "width": 224}])[0]["sem_seg"]
    expected = direct.argmax(0).numpy()
    assert len(np.unique(expected)) > 1  # a class map that can differ
    np.testing.assert_array_equal(_read(one), expected)
    # four blended windows: the same as over one 15-band file of the stacked array
    stacked = str(tmp_path / "stacked.tif")
    with rasterio.open(files["S2L2A"]) as src:
        profile = dict(src.profile, count=15, dtype="float32")
    with rasterio.open(stacked, "w", **profile) as dst:
        dst.write(sample.image)
    a, b = str(tmp_path / "mods.tif"), str(tmp_path / "file.tif")
    predict_scene(model, files, tile=128, overlap=32, semseg_path=a, progress=False)
    predict_scene(model, stacked, tile=128, overlap=32, semseg_path=b, progress=False, quicklook=False)
    np.testing.assert_array_equal(_read(a), _read(b))
    with rasterio.open(a) as src, rasterio.open(files["DEM"]) as dem:
        assert src.crs == dem.crs and src.transform.almost_equals(dem.transform)
    assert os.path.getsize(a + ".png") > 0  # the quick-look of the S2L2A file
    # a pixel without data in one modality (the DEM's nodata) has no class
    with rasterio.open(files["DEM"]) as src:
        profile, dem = src.profile, src.read()
    dem[:, 40:60, 100:150] = -32768
    holed = str(tmp_path / "dem_nodata.tif")
    with rasterio.open(holed, "w", **dict(profile, nodata=-32768)) as dst:
        dst.write(dem)
    gap = str(tmp_path / "gap.tif")
    predict_scene(model, {**files, "DEM": holed}, tile=224, overlap=0, semseg_path=gap, progress=False,
                  quicklook=False)
    labels = _read(gap)
    assert (labels[40:60, 100:150] == 255).all() and (labels == 255).sum() == 20 * 50


def test_misaligned_or_misordered_modalities_are_refused_before_any_window(terramind_examples, tiny, tmp_path):
    model, _ = tiny
    files = _files(terramind_examples, _names(terramind_examples)[0])
    with rasterio.open(files["DEM"]) as src:
        profile, data = src.profile, src.read()
    moved, small = str(tmp_path / "dem_moved.tif"), str(tmp_path / "dem_small.tif")
    shifted = profile["transform"] * rasterio.Affine.translation(3, 0)
    with rasterio.open(moved, "w", **dict(profile, transform=shifted)) as d:
        d.write(data)
    with rasterio.open(small, "w", **dict(profile, width=200)) as d:
        d.write(data[:, :, :200])
    out = str(tmp_path / "out.tif")
    with pytest.raises(SceneRequestError, match=r"not on one grid: .*dem_moved.tif \(DEM\): its geotransform differs "
                                                r"from S2L2A's: origin .* off by \(3, 0\) pixels.*gdalwarp"):
        predict_scene(model, {**files, "DEM": moved}, tile=128, overlap=32, semseg_path=out, progress=False)
    with pytest.raises(SceneRequestError, match=r"dem_small.tif \(DEM\): its shape is 224x200, S2L2A's 224x224"):
        predict_scene(model, {**files, "DEM": small}, tile=128, overlap=32, semseg_path=out, progress=False)
    with pytest.raises(SceneRequestError, match="model takes the channels S2L2A:B01.*give the modalities.*in the "
                                                "model's order"):
        predict_scene(model, {m: files[m] for m in ("S1RTC", "S2L2A", "DEM")}, semseg_path=out, progress=False)
    with pytest.raises(SceneRequestError, match="model takes 15 bands but the modality files give 14"):
        predict_scene(model, {m: files[m] for m in ("S2L2A", "S1RTC")}, semseg_path=out, progress=False)
    with pytest.raises(SceneRequestError, match=r"band_names=.* is one value.*--band-names S2L2A="):
        predict_scene(model, files, band_names=["VV", "VH"], semseg_path=out, progress=False)
    assert os.listdir(tmp_path) == sorted(os.listdir(tmp_path)) and not os.path.exists(out)


def test_predict_scene_cli_with_one_input_per_modality(terramind_examples, tiny, tmp_path, capsys):
    from d2geo.cli import tool_module as load_tool

    model, weights = tiny
    files = _files(terramind_examples, _names(terramind_examples)[1])
    tool = load_tool("predict_scene")
    cli, api = str(tmp_path / "cli.tif"), str(tmp_path / "api.tif")
    inputs = [a for m in MODS for a in ("--input", f"{m}={files[m]}")]
    tool.main(["--config-file", CONFIG, "--weights", weights, *inputs, "--out-semseg", cli, "--tile", "128",
               "--overlap", "32", *QUIET, *TINY])
    predict_scene(model, files, tile=128, overlap=32, semseg_path=api, progress=False, quicklook=False)
    np.testing.assert_array_equal(_read(cli), _read(api))
    base = ["--config-file", CONFIG, "--weights", weights, *inputs, "--out-semseg", str(tmp_path / "x.tif"), *QUIET]
    with pytest.raises(SystemExit, match=r"--dn-scale '0.0001' is one value for the modalities S2L2A, S1RTC, DEM.*"
                                         r"--dn-scale S2L2A=0.0001"):
        tool.main([*base, "--dn-scale", "0.0001", *TINY])
    with pytest.raises(SystemExit, match="--input 'S2L2A': give MODALITY=VALUE"):
        tool.main(["--config-file", CONFIG, "--weights", weights, "--input", "S2L2A", "--out-semseg", "x.tif"])
    with pytest.raises(SystemExit, match="the modality S2L2A is given twice"):
        tool.main([*base, "--input", f"S2L2A={files['S2L2A']}", *TINY])
    with pytest.raises(SystemExit, match="--sensor 'S1GRD=sentinel-1' names the modality S1GRD, which is not among"):
        tool.main([*base, "--sensor", "S1GRD=sentinel-1", *TINY])
    capsys.readouterr()
    with pytest.raises(SystemExit):
        tool.main([*base, "--scene", files["S2L2A"], *TINY])
    assert "argument --scene: not allowed with argument --input" in capsys.readouterr().err


def test_predict_region_over_modality_folders_equals_predict_scene(terramind_examples, tiny, tmp_path):
    from d2geo.inference import RegionOptions
    from d2geo.inference.region import RegionRequestError, collect_scenes, predict_region
    from d2geo.cli import tool_module as load_tool

    model, weights = tiny
    names = _names(terramind_examples)
    out = str(tmp_path / "out")
    # a folder per modality, scenes matched by file name; the five places lie in five UTM zones
    summary = load_tool("predict_region").main(
        ["--config-file", CONFIG, "--weights", weights,
         *[a for m in MODS for a in ("--input", f"{m}={os.path.join(terramind_examples, m)}")],
         "--output-dir", out, "--tile", "224", "--overlap", "0", "--mosaic-crs", "EPSG:4326", "--num-workers", "0",
         "--no-progress", "--cog-blocksize", "128", "--amp", "off", *TINY])
    assert sorted(summary["done"]) == [n[:-4] for n in names]
    for name in names[:2]:
        ref = str(tmp_path / f"ref_{name}")
        predict_scene(model, _files(terramind_examples, name), tile=224, overlap=0, semseg_path=ref,
                      progress=False, quicklook=False)
        np.testing.assert_array_equal(_read(os.path.join(out, name)), _read(ref))
    # a text list of MODALITY=path lines gives the same scenes
    lst = tmp_path / "scenes.txt"
    lst.write_text("".join(" ".join(f"{m}={os.path.join(terramind_examples, m, n)}" for m in MODS) + "\n"
                           for n in names))
    listed = collect_scenes([str(lst)])
    assert [s.modalities for s in listed] == [_files(terramind_examples, n) for n in names]
    assert listed[0].paths == list(_files(terramind_examples, names[0]).values())
    # a modality folder that lacks a scene's file, and a moved file, are refused before any work
    partial = tmp_path / "DEM"
    partial.mkdir()
    os.symlink(os.path.join(terramind_examples, "DEM", names[0]), partial / names[0])
    with pytest.raises(RegionRequestError, match=f"the DEM folder {partial} has no {names[1]}.*same file name"):
        predict_region(model, {"S2L2A": os.path.join(terramind_examples, "S2L2A"), "DEM": str(partial)},
                       str(tmp_path), RegionOptions(tile=224, overlap=0, num_workers=0), progress=False)
    with rasterio.open(os.path.join(terramind_examples, "DEM", names[0])) as src:
        profile, data = src.profile, src.read()
    moved = tmp_path / "moved" / names[0]
    moved.parent.mkdir()
    shifted = profile["transform"] * rasterio.Affine.translation(0, 2)
    with rasterio.open(moved, "w", **dict(profile, transform=shifted)) as d:
        d.write(data)
    with pytest.raises(RegionRequestError, match=f"scene {names[0][:-4]}: the modalities are not on one grid.*"
                                                 r"off by \(0, 2\) pixels"):
        collect_scenes({"S2L2A": os.path.join(terramind_examples, "S2L2A", names[0]), "DEM": str(moved)})
