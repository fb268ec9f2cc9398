"""CUDA paths of the tools: train_net under ``--num-gpus 1`` resumes exactly after a kill,
predict_region on the device gives the CPU's class map, export from a model on the device and
onnxruntime's CUDA provider.

Run by ``benchmarks/gpu_check.sh`` (``pytest -m gpu``); without CUDA they skip, and the
dry run (``D2GEO_GPU_TEST_DEVICE=cpu``) runs them on the CPU where that means something.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

pytest.importorskip("detectron2", reason="detectron2 is not installed: see README for installing it from source")

from helpers import rel_err  # noqa: E402
from gpu_common import FP32_REL, _no_tf32, device, needs_cuda  # noqa: E402,F401  (fixtures)

pytestmark = pytest.mark.gpu

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SEG = os.path.join(ROOT, "configs", "quickstart", "semantic_fpn_tiny.py")
TRAIN_NET = os.path.join(ROOT, "tools", "train_net.py")


def _env(tmp_path_factory) -> dict:
    return dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1",
                D2GEO_DATASETS=str(tmp_path_factory.getbasetemp() / "d2geo_datasets"))


def _losses(out: str, start: int = 0) -> list[tuple[int, float]]:
    """(iteration, total loss) of the rows of metrics.json from byte ``start`` on."""
    with open(os.path.join(out, "metrics.json"), "rb") as f:
        f.seek(start)
        rows = [json.loads(line) for line in f.read().decode().splitlines() if line.strip()]
    return [(r["iteration"], r["total_loss"]) for r in rows if "total_loss" in r]


# -- train_net: kill and resume ----------------------------------------------------------------
def test_train_net_on_one_gpu_resumes_exactly_after_a_kill(tmp_path, tmp_path_factory, device):
    """An uninterrupted run against one killed (SIGKILL) after a checkpoint and resumed with
    ``--resume``: the resumed run continues right after the checkpoint and its final weights
    are the uninterrupted run's."""
    env = _env(tmp_path_factory)
    max_iter, period = 20, 5

    def cmd(out, *extra):
        return [sys.executable, TRAIN_NET, "--config-file", SEG, "--num-gpus", "1", *extra,
                f"train.device={device.type}", f"train.output_dir={out}", f"train.max_iter={max_iter}",
                f"train.checkpointer.period={period}", "train.log_period=1", "train.eval_period=0",
                "dataloader.train.num_workers=0"]

    whole, broken = str(tmp_path / "whole"), str(tmp_path / "broken")
    done = subprocess.run(cmd(whole), env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]

    first_ckpt = os.path.join(broken, f"model_{period - 1:07d}.pth")
    proc = subprocess.Popen(cmd(broken), env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 300
    while not (os.path.isfile(os.path.join(broken, "last_checkpoint")) and os.path.isfile(first_ckpt)):
        assert proc.poll() is None, f"the run ended before its first checkpoint: {proc.stderr.read()[-3000:]}"
        assert time.monotonic() < deadline, "no checkpoint within 300 s"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run finished before the kill: nothing was resumed"
    killed_at = os.path.getsize(os.path.join(broken, "metrics.json"))
    with open(os.path.join(broken, "last_checkpoint")) as f:
        ckpt = f.read().strip()
    resumed_from = torch.load(os.path.join(broken, ckpt), weights_only=True, map_location="cpu")["iteration"]
    assert resumed_from < max_iter - 1

    rest = subprocess.run(cmd(broken, "--resume"), env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert rest.returncode == 0, rest.stderr[-3000:]
    # metrics.json's total_loss is a running median (detectron2's smoothing hint): it restarts with
    # the resumed process, so the weights are what is compared
    assert [i for i, _ in _losses(whole)] == list(range(max_iter))
    got = [i for i, _ in _losses(broken, start=killed_at)]  # the resumed run's rows
    assert got == list(range(resumed_from + 1, max_iter)), f"not continued right after iteration {resumed_from}"
    a = torch.load(os.path.join(whole, "model_final.pth"), weights_only=True, map_location="cpu")
    b = torch.load(os.path.join(broken, "model_final.pth"), weights_only=True, map_location="cpu")
    assert a["iteration"] == b["iteration"] == max_iter - 1
    at_ckpt = torch.load(os.path.join(broken, ckpt), weights_only=True, map_location="cpu")["model"]
    keys = [k for k, v in a["model"].items() if v.is_floating_point()]

    def flat(state):
        return torch.cat([state[k].double().flatten() for k in keys])

    whole_w, resumed_w = flat(a["model"]), flat(b["model"])
    err = ((resumed_w - whole_w).norm() / whole_w.norm()).item()
    moved = ((resumed_w - flat(at_ckpt)).norm() / whole_w.norm()).item()
    # the CPU is deterministic; CUDA kernels that accumulate with atomics (interpolation's
    # backward) are not, and Adam can turn that noise into a few differing elements: the whole
    # state's norm is compared. A resume that loses the optimizer, data or schedule state
    # differs by about as much as the weights moved after the checkpoint.
    tol = 1e-7 if device.type == "cpu" else 1e-4
    worst = max(keys, key=lambda k: (b["model"][k].double() - a["model"][k].double()).abs().max().item())
    assert err < tol, (f"resumed vs uninterrupted weights differ by {err:.2e} of their norm (largest in {worst}); "
                       f"they moved {moved:.2e} after the checkpoint")
    assert moved > 100 * tol, "the resumed run did not train past the checkpoint"


NCCL_SCRIPT = """
import sys
import torch, torch.distributed as dist
from detectron2.engine.launch import _distributed_worker, _find_free_port
from detectron2.utils import comm

def main(device):
    want = "nccl" if device == "cuda" else "gloo"
    assert dist.get_backend() == want, (dist.get_backend(), want)
    t = torch.full((3,), 2.0, device=device)
    dist.all_reduce(t)
    assert t.tolist() == [2.0, 2.0, 2.0], t
    model = torch.nn.Linear(4, 2).to(device)
    ddp = torch.nn.parallel.DistributedDataParallel(model, device_ids=[0] if device == "cuda" else None)
    ddp(torch.randn(8, 4, device=device)).square().sum().backward()
    assert model.weight.grad is not None and model.weight.grad.abs().sum() > 0
    comm.synchronize()
    print("process group", dist.get_backend(), "world size", comm.get_world_size())

_distributed_worker(0, main, 1, 1, 0, f"tcp://127.0.0.1:{_find_free_port()}", (sys.argv[1],))
"""


def test_detectron2s_launch_worker_runs_nccl_and_a_ddp_step(tmp_path_factory, device):
    """What ``--num-gpus N`` starts in each process: detectron2's worker sets up the process group
    (NCCL on a GPU, gloo on the CPU); an all-reduce and a DDP backward run in it (world size 1:
    one GPU here; ``--num-gpus 1`` itself runs in-process without a group)."""
    proc = subprocess.run([sys.executable, "-c", NCCL_SCRIPT, device.type], env=_env(tmp_path_factory), cwd=ROOT,
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    want = "nccl" if device.type == "cuda" else "gloo"
    assert f"process group {want} world size 1" in proc.stdout


# -- predict_region: device vs CPU -------------------------------------------------------------
@pytest.fixture(scope="module")
def region_inputs(tmp_path_factory):
    """Two 6-band 10 m scenes and quickstart Semantic FPN weights whose class scores are far
    apart (random weights, the predictor scaled x1000): a label that changes between devices
    is a difference, not a tie broken by rounding."""
    pytest.importorskip("rasterio")
    from detectron2.config import LazyConfig, instantiate

    from benchmarks.region import write_scene

    folder = tmp_path_factory.mktemp("gpu_region")
    scenes = folder / "scenes"
    scenes.mkdir()
    for i, side in enumerate((320, 200)):
        write_scene(str(scenes / f"scene{i}.tif"), side, seed=i)
    torch.manual_seed(0)
    model = instantiate(LazyConfig.load(SEG).model)
    with torch.no_grad():
        model.sem_seg_head.predictor.weight.mul_(1000.0)
    weights = str(folder / "seg.pth")
    torch.save({"model": model.state_dict()}, weights)
    return str(scenes), weights


def _class_maps(out_dir, summary) -> dict[str, np.ndarray]:
    import rasterio

    maps = {}
    for sid in summary["scenes"]:
        with rasterio.open(os.path.join(out_dir, f"{sid}.tif")) as src:
            maps[sid] = src.read(1)
    return maps


@pytest.mark.parametrize("amp", ["off", "auto"])
def test_predict_region_on_the_device_equals_the_cpu_class_map(region_inputs, tmp_path, device, amp):
    """The tool on the device (read-ahead worker; ``--amp auto``: bfloat16 on a GPU) labels at
    least 99.5% of the pixels as the CPU in float32 does."""
    from d2geo.cli import tool_module as load_tool

    scenes, weights = region_inputs
    tool = load_tool("predict_region")
    common = ["--config-file", SEG, "--weights", weights, "--scenes", scenes, "--tile", "128", "--overlap", "32",
              "--no-progress"]
    ran = tool.main([*common, "--output-dir", str(tmp_path / "cpu"), "--device", "cpu", "--amp", "off",
                     "--num-workers", "0"])
    cpu = _class_maps(tmp_path / "cpu", ran)
    ran = tool.main([*common, "--output-dir", str(tmp_path / "dev"), "--device", device.type, "--amp", amp,
                     "--num-workers", "1"])
    dev = _class_maps(tmp_path / "dev", ran)
    assert set(cpu) == set(dev) and len(cpu) == 2
    for sid in cpu:
        assert dev[sid].shape == cpu[sid].shape
        agree = float((dev[sid] == cpu[sid]).mean())
        assert len(np.unique(cpu[sid])) > 1, "a one-class map would make the comparison empty"
        assert agree >= 0.995, f"{sid}: {device} (amp {amp}) labels {agree:.2%} of the pixels as the CPU"


# -- export ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def export_tool():
    """The export library behind tools/export_model.py."""
    from d2geo.engine import export

    return export


TINY_ENCODER = ["model.backbone.net.encoder_kwargs.depth=2", "model.backbone.net.encoder_kwargs.embed_dim=48"]


@pytest.fixture(scope="module")
def export_opts(export_tool, tmp_path_factory) -> list[str]:
    """The tiny quickstart segmentor with one set of random weights (train.init_checkpoint), so
    that every build of it is the same model."""
    torch.manual_seed(0)
    model, _ = export_tool.build_model_from_config(SEG, TINY_ENCODER)
    path = str(tmp_path_factory.mktemp("export") / "weights.pth")
    torch.save({"model": model.state_dict()}, path)
    return [*TINY_ENCODER, f"train.init_checkpoint={path}"]


def test_torchscript_export_of_a_model_on_the_device(export_tool, export_opts, tmp_path, device):
    """Traced on the device, saved, loaded back: the export's output equals the eager model's."""
    model, _ = export_tool.build_model_from_config(SEG, export_opts)
    model.to(device)
    inputs = export_tool.model_inputs(export_tool.synthetic_sample(model, 64), model)
    inputs = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in inputs.items()}
    path, diff = export_tool.export(model, inputs, fmt="torchscript", method="tracing", output=str(tmp_path))
    assert os.path.isfile(path) and diff < 1e-4, diff
    loaded = torch.jit.load(path, map_location=device)
    with torch.no_grad():
        want = model([{"image": inputs["image"], "height": 64, "width": 64}])[0]["sem_seg"]
        (got,) = export_tool._flat(loaded(inputs["image"]))
    assert got.device.type == device.type
    assert rel_err(got.reshape(want.shape), want) < FP32_REL


def test_onnx_export_runs_in_onnxruntimes_cuda_provider(export_tool, export_opts, tmp_path, device):
    """The ONNX the tool writes (on the CPU, as users export) in onnxruntime's CUDA provider
    equals the eager model on the device."""
    needs_cuda("onnxruntime's CUDAExecutionProvider")
    ort = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip(f"this onnxruntime has no CUDAExecutionProvider (it has {ort.get_available_providers()}; "
                    "onnxruntime-gpu has it)")
    export_tool.main(["--config-file", SEG, "--format", "onnx", "--output", str(tmp_path), "--sample-size", "64",
                      *export_opts])
    model, _ = export_tool.build_model_from_config(SEG, export_opts)
    model.to(device)
    image = np.random.default_rng(0).normal(0.15, 0.1, (6, 80, 96)).astype(np.float32)
    sess = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CUDAExecutionProvider"])
    assert sess.get_providers()[0] == "CUDAExecutionProvider"
    (got,) = sess.run(None, {sess.get_inputs()[0].name: image})
    with torch.no_grad():
        want = model([{"image": torch.from_numpy(image).to(device), "height": 80, "width": 96}])[0]["sem_seg"]
    assert rel_err(torch.from_numpy(got), want.cpu()) < 1e-3
