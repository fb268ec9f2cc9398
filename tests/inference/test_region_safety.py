"""Region runs that would lose or corrupt outputs are refused before any work (issue 26, items
11-13): colliding output names, a second writer on one output folder, the scenes' own folder
as the output folder; temporaries are cleaned only when their writer is gone."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch

rasterio = pytest.importorskip("rasterio")
from rasterio.transform import from_origin  # noqa: E402

from d2geo.data.synthetic.generator import write_geotiff  # noqa: E402
from d2geo.inference import InferenceOptions, SceneRequestError  # noqa: E402
from d2geo.inference.region import STATE_DIR, OutputLockError, RegionRequestError, predict_region  # noqa: E402


class _Constant(torch.nn.Module):
    """A semantic 'model' of 6 bands: class 1 everywhere (fast; the tests are about files)."""

    def __init__(self):
        super().__init__()
        self.sem_seg_head = torch.nn.Identity()
        self.register_buffer("pixel_mean", torch.zeros(6, 1, 1), persistent=False)
        self.calls = 0

    def forward(self, batched_inputs):
        self.calls += 1
        out = []
        for d in batched_inputs:
            logits = torch.zeros(3, d["height"], d["width"])
            logits[1] = 1
            out.append({"sem_seg": logits})
        return out


def _scene(path, x0=500000):
    write_geotiff(str(path), np.full((6, 40, 48), 0.1, np.float32), transform=from_origin(x0, 4200000, 10, 10))
    return str(path)


OPTS = dict(tile=32, overlap=8, num_workers=0, cog_blocksize=128, amp="off")


def test_output_names_that_collide_are_refused_before_any_work(tmp_path):
    scenes = tmp_path / "scenes"
    scenes.mkdir()
    a = _scene(scenes / "a.tif")
    b = _scene(scenes / "a.scores.tif", x0=600000)  # a's class scores would overwrite b's class map
    out = tmp_path / "out"
    out.mkdir()
    m = _Constant()
    with pytest.raises(RegionRequestError, match=r"a.scores.tif, which is also an output of scene a"):
        predict_region(m, [a, b], str(out), InferenceOptions(probabilities=True, **OPTS), progress=False)
    assert m.calls == 0 and os.listdir(out / STATE_DIR / "done") == []
    # without --probabilities the names do not collide
    predict_region(m, [a, b], str(out), InferenceOptions(**OPTS), progress=False)
    assert {"a.tif", "a.scores.tif"} <= set(os.listdir(out))
    # the scenes' own folder as output folder: a rerun would read the outputs as scenes
    with pytest.raises(RegionRequestError, match="holds the scenes themselves: a rerun"):
        predict_region(m, [str(scenes)], str(scenes), InferenceOptions(**OPTS), progress=False)
    assert sorted(os.listdir(scenes)) == [STATE_DIR, "a.scores.tif", "a.tif"]


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_a_second_writer_is_refused_and_a_dead_writers_temporaries_are_cleaned(tmp_path):
    a = _scene(tmp_path / "a.tif")
    out = tmp_path / "out"
    (out / STATE_DIR / "tmp").mkdir(parents=True)
    lock = out / STATE_DIR / "lock"
    temp = out / ".a.tif.x1y2.d2geo-tmp.tif"  # a file the other run is writing
    temp.write_bytes(b"partial")
    m = _Constant()
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as other:
        try:
            lock.write_text(json.dumps({"pid": other.pid, "host": socket.gethostname()}))
            with pytest.raises(OutputLockError, match=f"another run \\(pid {other.pid} on .*\\) is writing to"):
                predict_region(m, [a], str(out), InferenceOptions(**OPTS), progress=False)
            assert temp.exists() and m.calls == 0  # the live run's file is left alone
        finally:
            other.kill()
    # a lock from another host cannot be checked: refused, naming the file to delete
    lock.write_text(json.dumps({"pid": 1, "host": "elsewhere.example"}))
    with pytest.raises(OutputLockError, match="if that run is over, delete .*lock"):
        predict_region(m, [a], str(out), InferenceOptions(**OPTS), progress=False)
    # the writer is gone: its lock is taken over and its temporaries removed
    lock.write_text(json.dumps({"pid": _dead_pid(), "host": socket.gethostname()}))
    predict_region(m, [a], str(out), InferenceOptions(**OPTS), progress=False)
    assert not temp.exists() and not lock.exists() and (out / "a.tif").exists()


def test_the_resume_key_follows_imported_configs_and_the_loaded_weights(tmp_path):
    """A change in a config file the top config imports, or in the weights behind the same path,
    redoes the scenes (the key hashed the top file's text and the weights' path: issue 26, item 3)."""
    pytest.importorskip("detectron2")
    from detectron2.config import LazyConfig, instantiate

    from d2geo.inference.region import run_key

    cfgs = tmp_path / "cfgs"
    cfgs.mkdir()
    (cfgs / "base.py").write_text("import torch\nfrom detectron2.config import LazyCall as L\n\n"
                                  "model = L(torch.nn.Linear)(in_features=4, out_features=2)\n")
    (cfgs / "top.py").write_text("from .base import model\n")
    opts = InferenceOptions()

    def key(overrides=()):
        cfg = LazyConfig.apply_overrides(LazyConfig.load(str(cfgs / "top.py")), list(overrides))
        torch.manual_seed(0)
        return run_key(cfg, instantiate(cfg.model), opts), cfg

    k0, cfg = key()
    assert key()[0] == k0  # deterministic
    assert key(["model.bias=False"])[0] != k0  # an override
    (cfgs / "base.py").write_text((cfgs / "base.py").read_text().replace("out_features=2", "out_features=3"))
    assert key()[0] != k0  # the imported file changed, top.py did not
    (cfgs / "base.py").write_text((cfgs / "base.py").read_text().replace("out_features=3", "out_features=2"))
    torch.manual_seed(0)
    model = instantiate(cfg.model)
    assert run_key(cfg, model, opts) == k0
    with torch.no_grad():
        model.weight[0, 0] += 1e-3  # other weights behind the same path (hf://...@main moved)
    assert run_key(cfg, model, opts) != k0
    assert run_key(cfg, model, InferenceOptions(tile=128)) != run_key(cfg, model, opts)


def test_a_south_up_or_rotated_scene_is_refused_before_the_run(tmp_path):
    """mosaic.vrt took only the a/e terms: a south-up scene made a VRT that does not open after
    a run that reported success (issue 26, item 4)."""
    from affine import Affine

    out = tmp_path / "out"
    out.mkdir()
    m = _Constant()
    for name, t in (("south_up", Affine(10, 0, 500000, 0, 10, 4200000)),
                    ("rotated", Affine(10, 2, 500000, 2, -10, 4200000))):
        p = tmp_path / f"{name}.tif"
        write_geotiff(str(p), np.full((6, 20, 24), 0.1, np.float32), transform=t)
        with pytest.raises(RegionRequestError, match=f"has a {name.split('_')[0]}.* geotransform .*gdalwarp"):
            predict_region(m, [str(p)], str(out), InferenceOptions(**OPTS), progress=False)
    assert m.calls == 0 and not (out / "mosaic.vrt").exists()


def test_scene_lists_image_files_and_paths_with_spaces(tmp_path):
    """--scenes x.png was read as a text list (UnicodeDecodeError); a listed path with a space
    was cut at the space (issue 26, item 16)."""
    from PIL import Image

    out = tmp_path / "out"
    out.mkdir()
    m = _Constant()
    png = tmp_path / "x.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(png)
    with pytest.raises(RegionRequestError, match="x.png is not a raster predict_region reads .* a PNG or JPEG"):
        predict_region(m, [str(png)], str(out), InferenceOptions(**OPTS), progress=False)
    scenes = tmp_path / "my scenes"
    scenes.mkdir()
    _scene(scenes / "my scene.tif")
    _scene(scenes / "other scene.tif", x0=600000)
    (tmp_path / "list.txt").write_text('my scenes/my scene.tif\n"my scenes/other scene.tif"\n')
    summary = predict_region(m, [str(tmp_path / "list.txt")], str(out), InferenceOptions(**OPTS), progress=False)
    assert sorted(summary["done"]) == ["my scene", "other scene"]
    (tmp_path / "bad.txt").write_text("my scenes/nothing here.tif\n")
    with pytest.raises(RegionRequestError, match=r"line 1: no scene file .* quote a path that holds spaces"):
        predict_region(m, [str(tmp_path / "bad.txt")], str(out), InferenceOptions(**OPTS), progress=False)


def test_a_full_disk_is_named(tmp_path, monkeypatch):
    """GDAL's write error does not say the disk is full: the run says so, naming the folder."""
    import errno
    import shutil
    from collections import namedtuple

    import d2geo.inference.loop as loop
    from rasterio.errors import RasterioIOError

    a = _scene(tmp_path / "a.tif")
    out = tmp_path / "out"
    out.mkdir()

    def fail(*args, **kwargs):
        raise RasterioIOError("TIFFAppendToStrip: Write error at scanline 0")

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(loop, "to_cog", fail)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(1 << 30, 1 << 30, 0))
    with pytest.raises(OSError, match=r"no space left on .*out.* free some space") as e:
        predict_region(_Constant(), [a], str(out), InferenceOptions(**OPTS), progress=False)
    assert e.value.errno == errno.ENOSPC
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(1 << 30, 0, 1 << 30))
    with pytest.raises(RasterioIOError):  # with space left, GDAL's own error stands
        predict_region(_Constant(), [a], str(out), InferenceOptions(**OPTS), progress=False)


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_to_crs_and_area_filters_on_a_scene_without_a_crs_are_refused(tmp_path):
    """--to-crs on a scene without a CRS wrote pixel coordinates labelled EPSG:4326 (issue 26, item 5)."""
    import warnings

    from d2geo.inference import predict_scene

    p = tmp_path / "nocrs.tif"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with rasterio.open(p, "w", driver="GTiff", width=40, height=30, count=6, dtype="float32") as dst:
            dst.write(np.full((6, 30, 40), 0.1, np.float32))
    out = tmp_path / "out"
    out.mkdir()
    m = _Constant()
    with pytest.raises(SceneRequestError, match="has no CRS: its vectors are in pixel coordinates"):
        predict_scene(m, str(p), regions_path=str(out / "r.geojson"), to_crs="EPSG:4326", tile=32, overlap=8,
                      progress=False, quicklook=False)
    with pytest.raises(SceneRequestError, match=r"--min-area-m2 \(square metres\) cannot apply"):
        predict_scene(m, str(p), regions_path=str(out / "r.geojson"), min_area_m2=10.0, tile=32, overlap=8,
                      progress=False, quicklook=False)
    assert m.calls == 0 and os.listdir(out) == []
    predict_scene(m, str(p), regions_path=str(out / "r.geojson"), tile=32, overlap=8, progress=False,
                  quicklook=False)  # pixel coordinates, said as such: no CRS member
    assert "crs" not in json.load(open(out / "r.geojson"))


def test_scenes_across_the_antimeridian_are_refused_where_outputs_would_span_the_world(tmp_path):
    """An EPSG:4326 scene with longitudes above 180: its vectors in EPSG:3857 spanned the whole
    world, and a mosaic with a UTM 1S neighbour was 3.6 million px wide (issue 26, item 10)."""
    across = tmp_path / "across.tif"
    write_geotiff(str(across), np.full((6, 20, 40), 0.1, np.float32),
                  transform=from_origin(179.99, -10.0, 0.0005, 0.0005), crs="EPSG:4326")
    from rasterio.warp import transform as warp

    (x,), (y,) = warp("EPSG:4326", "EPSG:32701", [-179.995], [-10.0])
    east = tmp_path / "east_utm1s.tif"
    write_geotiff(str(east), np.full((6, 20, 20), 0.1, np.float32), transform=from_origin(round(x), round(y), 10, 10),
                  crs="EPSG:32701")
    out = tmp_path / "out"
    out.mkdir()
    m = _Constant()
    with pytest.raises(RegionRequestError, match=r"crosses the antimeridian \(longitudes 179.99.* to 180.01.*its "
                                                 r"vectors in --to-crs"):
        predict_region(m, [str(across)], str(out), InferenceOptions(to_crs="EPSG:3857", polygons=True, **OPTS),
                       progress=False)
    with pytest.raises(RegionRequestError, match="crosses the antimeridian .* a mosaic.vrt over it"):
        predict_region(m, [str(across), str(east)], str(out), InferenceOptions(**OPTS), progress=False)
    assert m.calls == 0
    predict_region(m, [str(across)], str(out), InferenceOptions(**OPTS), progress=False)  # alone: its own CRS
    with rasterio.open(out / "mosaic.vrt") as src:
        assert src.width == 40


def test_log_lines_go_above_the_progress_bar_not_into_it(tmp_path, capsys):
    import logging
    import re
    import sys

    a, b = _scene(tmp_path / "a.tif"), _scene(tmp_path / "b.tif", x0=600000)
    out = tmp_path / "out"
    out.mkdir()
    handler = logging.StreamHandler(sys.stderr)  # as the tools' logging setup
    handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        predict_region(_Constant(), [a, b], str(out), InferenceOptions(**OPTS), progress=True)
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    err = capsys.readouterr().err
    assert "region:" in err and "a: 4 windows" in err
    for segment in re.split(r"[\r\n]", err):
        assert not ("km²" in segment and "windows," in segment), segment  # a log line inside the bar's line
