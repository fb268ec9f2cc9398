"""Issue 22's "done when": a model trained with the quickstart, exported to one file, and that file
alone (torch and detectron2 blocked) gives the config run's class maps on the real tiles."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SEG = os.path.join(ROOT, "configs", "quickstart", "semantic_fpn_tiny.py")
S2_NAMES = "B01,B02,B03,B04,B05,B06,B07,B08,B8A,B09,B11,B12"
BLOCK = ("import sys\nfor _n in ('torch', 'detectron2', 'torchvision', 'timm', 'detrex'):\n"
         "    sys.modules[_n] = None\n")
ITERS = 300


def _losses(out):
    rows = [json.loads(line) for line in open(os.path.join(out, "metrics.json")) if line.strip()]
    return [r["total_loss"] for r in rows if "total_loss" in r]


@pytest.mark.slow  # ~2 min: trains the quickstart for 300 iterations, exports, predicts the five real tiles twice
def test_trained_quickstart_model_file_agrees_with_the_config_run(terramind_examples, tmp_path):
    import rasterio

    from d2geo.cli.predict_scene import main

    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="",
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.setdefault("D2GEO_DATASETS", str(tmp_path / "datasets"))
    out = str(tmp_path / "train")
    r = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "train_net.py"), "--config-file", SEG,
                        f"train.output_dir={out}", f"train.max_iter={ITERS}", "train.eval_period=0",
                        "train.log_period=20", "train.seed=1"], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    losses = _losses(out)
    assert losses[-1] < 0.6 * losses[0], losses  # trained: the weights are far from their initialisation
    weights = os.path.join(out, "model_final.pth")

    exp = str(tmp_path / "export")
    r = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "export_model.py"), "--config-file", SEG,
                        "--format", "onnx", "--output", exp, "--describe", "sensor=sentinel-2-l2a", "--describe",
                        "dn_scale=0.0001", "--describe", "gsd_m=10", "--describe", "window=128", "--describe",
                        "overlap=32", f"train.init_checkpoint={weights}"], env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    model_file = os.path.join(exp, "model.onnx")

    s2 = os.path.join(terramind_examples, "S2L2A")
    scenes = [os.path.join(s2, n) for n in sorted(os.listdir(s2))]
    code = BLOCK + ("from d2geo.cli.predict_scene import main\nmain(sys.argv[1:])\n"
                    "print('IMPORTED', sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'detectron2', "
                    "'timm') and sys.modules[m] is not None))\n")
    agree = total = 0
    classes = set()
    for scene in scenes:
        ours, ref = str(tmp_path / f"file_{os.path.basename(scene)}"), str(tmp_path / f"cfg_{os.path.basename(scene)}")
        r = subprocess.run([sys.executable, "-c", code, "--model", model_file, "--scene", scene, "--band-names",
                            S2_NAMES, "--out-semseg", ours, "--no-progress", "--no-quicklook"], capture_output=True,
                           text=True, env=env, cwd=str(tmp_path), timeout=300)
        assert r.returncode == 0, r.stderr[-3000:]
        assert "IMPORTED []" in r.stdout
        main(["--config-file", SEG, "--weights", weights, "--scene", scene, "--band-names", S2_NAMES, "--sensor",
              "sentinel-2-l2a", "--bands", "blue,green,red,nir_narrow,swir_1,swir_2", "--dn-scale", "0.0001",
              "--tile", "128", "--overlap", "32", "--out-semseg", ref, "--no-progress", "--no-quicklook"])
        with rasterio.open(ours) as a, rasterio.open(ref) as b:
            la, lb = a.read(1), b.read(1)
        assert la.shape == lb.shape
        agree += int((la == lb).sum())
        total += la.size
        classes |= set(np.unique(lb).tolist())
    print(f"label agreement of the trained model file with the config run: {agree / total:.6f} "
          f"({total - agree} of {total} pixels differ, {len(scenes)} tiles, classes {sorted(classes)})")
    assert len(classes) > 1, "a constant class map compares nothing"
    assert agree / total >= 0.995
