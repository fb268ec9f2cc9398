"""Crash-safe training and safe checkpoints (d2geo.engine, tools/train_net.py --resume).

* a run killed with SIGKILL and resumed ends with the same weights as an uninterrupted run;
* checkpoints and ``last_checkpoint`` are written atomically;
* every checkpoint read uses weights_only / safetensors: pickles are refused, and the
  source tree has no ``torch.load`` without ``weights_only=True``;
* an init checkpoint of another model is an error, not a warning.
"""
from __future__ import annotations

import ast
import glob
import os
import pickle
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import torch.nn as nn

pytest.importorskip("detectron2", reason="detectron2 is not installed: see README for installing it from source")

from d2geo.encoders import CheckpointError, build_encoder  # noqa: E402
from d2geo.engine import (  # noqa: E402
    GeoCheckpointer,
    ResumableTrainingSampler,
    atomic_torch_save,
    capture_rng_state,
    restore_rng_state,
)
from d2geo.engine import checkpoint as engine_checkpoint  # noqa: E402
from d2geo.modeling import GeoBackbone  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SEG = os.path.join(ROOT, "configs", "quickstart", "semantic_fpn_tiny.py")
#: DINOv2's tiny test variant at two blocks, 8 px patches, 32 px native
TINY = dict(depth=2, patch_size=8, img_size=32)


# -- exact resume after SIGKILL ------------------------------------------------------------
def _train_cmd(out, *flags):
    return [sys.executable, os.path.join(ROOT, "tools", "train_net.py"), *flags, "--config-file", SEG,
            f"train.output_dir={out}", "train.max_iter=12", "train.checkpointer.period=2",
            "train.eval_period=0", "train.log_period=1", "dataloader.train.total_batch_size=2",
            "train.seed=3"]


def _final_weights(out):
    return torch.load(os.path.join(out, "model_final.pth"), weights_only=True)


@pytest.mark.slow  # three training processes, one SIGKILLed (~60 s)
def test_killed_run_resumes_to_the_same_final_weights(tmp_path):
    """~30 s: three short runs of the quickstart segmentation model in fresh interpreters."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="",
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.setdefault("D2GEO_DATASETS", str(tmp_path / "datasets"))
    whole, killed = str(tmp_path / "whole"), str(tmp_path / "killed")

    proc = subprocess.run(_train_cmd(whole), env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]

    # the same run, killed right after its first checkpoint (iteration 1 of 0..11)
    victim = subprocess.Popen(_train_cmd(killed), env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    tag = os.path.join(killed, "last_checkpoint")
    deadline = time.time() + 240
    while not os.path.exists(tag):
        assert victim.poll() is None, "the run ended before it could be killed"
        assert time.time() < deadline
        time.sleep(0.005)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    assert not os.path.exists(os.path.join(killed, "model_final.pth")), "killed too late"
    with open(tag) as f:
        resumed_from = f.read().strip()
    stored = torch.load(os.path.join(killed, resumed_from), weights_only=True)
    assert stored["iteration"] < 11 and {"rng", "sampler", "trainer"} <= set(stored)

    proc = subprocess.run(_train_cmd(killed, "--resume"), env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(os.path.join(killed, "log.txt")) as f:
        assert f"Starting training from iteration {stored['iteration'] + 1}" in f.read()

    a, b = _final_weights(whole), _final_weights(killed)
    assert a["iteration"] == b["iteration"] == 11
    assert set(a["model"]) == set(b["model"])
    differ = [k for k in a["model"] if not torch.equal(a["model"][k], b["model"][k])]
    assert not differ, f"{len(differ)} of {len(a['model'])} tensors differ, e.g. {differ[:3]}"
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])


def test_sampler_starts_inside_the_seeded_stream():
    full = ResumableTrainingSampler(7, seed=5)
    stream = iter(full)
    first = [next(stream) for _ in range(30)]
    resumed = ResumableTrainingSampler(7, seed=123)
    resumed.load_state_dict(full.state_dict())  # the seed travels with the checkpoint
    resumed.set_start(12)
    again = iter(resumed)
    assert [next(again) for _ in range(18)] == first[12:]
    with pytest.raises(ValueError, match="start must be >= 0"):
        resumed.set_start(-1)


def test_rng_states_round_trip_through_a_weights_only_file(tmp_path):
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    state = capture_rng_state()
    expected = (random.random(), np.random.rand(3).tolist(), torch.rand(3))
    path = str(tmp_path / "rng.pth")
    atomic_torch_save({"rng": state}, path)
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    restore_rng_state(torch.load(path, weights_only=True)["rng"])
    got = (random.random(), np.random.rand(3).tolist(), torch.rand(3))
    assert got[0] == expected[0] and got[1] == expected[1] and torch.equal(got[2], expected[2])


# -- atomic writes ----------------------------------------------------------------------------
class _Tiny(nn.Module):
    """A detectron2-style model: an encoder under backbone.net.encoder and a head."""

    def __init__(self, **kw):
        super().__init__()
        self.backbone = nn.Module()
        self.backbone.net = GeoBackbone("dinov2_test", encoder_kwargs={**TINY, **kw})
        self.head = nn.Linear(4, 2)


def test_a_writer_that_dies_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    model = _Tiny()
    ckpt = GeoCheckpointer(model, str(tmp_path))
    ckpt.save("model_0000001", iteration=1)
    before = open(tmp_path / "model_0000001.pth", "rb").read()

    def dies_half_way(obj, f):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise KeyboardInterrupt("killed while writing")

    monkeypatch.setattr(engine_checkpoint.torch, "save", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save("model_0000001", iteration=3)
    assert open(tmp_path / "model_0000001.pth", "rb").read() == before
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_0000001.pth"]  # no temp file
    monkeypatch.undo()
    assert GeoCheckpointer(_Tiny(), str(tmp_path)).resume_or_load("", resume=True)["iteration"] == 1


def test_temporary_files_of_a_killed_writer_are_cleaned_up(tmp_path):
    # the names d2geo.data.files gives them (extension kept), and the older ones without it
    stale = [tmp_path / ".model_0000003.pth.abc123.d2geo-tmp.pth", tmp_path / ".last_checkpoint.x1y2.d2geo-tmp",
             tmp_path / ".model_0000002.pth.abc123.d2geo-tmp"]
    for path in stale:
        path.write_bytes(b"partial")
    keep = [tmp_path / "notes.tmp", tmp_path / "model_0000001.pth", tmp_path / ".hidden.pth"]
    for path in keep:
        path.write_bytes(b"not ours")
    GeoCheckpointer(_Tiny(), str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == sorted(p.name for p in keep)


def test_concurrent_reader_never_sees_a_partial_file(tmp_path):
    """A thread rewrites one checkpoint in a loop while this one reads it: every read is a
    complete file (a rename swaps whole files; a killed writer is the test above)."""
    import threading

    path = str(tmp_path / "model.pth")
    atomic_torch_save({"model": {"w": torch.zeros(1 << 18)}}, path)
    stop = threading.Event()

    def writer():
        i = 0
        while not stop.is_set():
            i += 1
            atomic_torch_save({"model": {"w": torch.full((1 << 18,), float(i))}}, path)

    thread = threading.Thread(target=writer)
    thread.start()
    seen = set()
    try:
        deadline = time.time() + 30
        while len(seen) < 5 and time.time() < deadline:
            w = torch.load(path, weights_only=True)["model"]["w"]
            assert torch.all(w == w[0]), "a torn write"
            seen.add(float(w[0]))
    finally:
        stop.set()
        thread.join()
    assert len(seen) >= 3
    assert os.listdir(tmp_path) == ["model.pth"]  # no temporary file left behind


# -- safe reading ---------------------------------------------------------------------------
class _RunsCode:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_checkpointer_refuses_pickles_and_reports_truncation(tmp_path):
    model = _Tiny()
    good = str(tmp_path / "good.pth")
    GeoCheckpointer(model, str(tmp_path)).save("good")

    evil = str(tmp_path / "evil.pth")
    torch.save({"model": model.state_dict(), "payload": _RunsCode()}, evil)
    with pytest.raises(CheckpointError, match="refusing to load .*evil.pth"):
        GeoCheckpointer(_Tiny()).load(evil)

    pkl = str(tmp_path / "R-50.pkl")
    with open(pkl, "wb") as f:
        pickle.dump({"model": {k: v.numpy() for k, v in model.state_dict().items()}}, f)
    with pytest.raises(CheckpointError, match="refusing to read .*R-50.pkl: .pkl checkpoints are plain Python pickles"):
        GeoCheckpointer(_Tiny()).load(pkl)

    cut = str(tmp_path / "cut.pth")
    data = open(good, "rb").read()
    open(cut, "wb").write(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt: download it again"):
        GeoCheckpointer(_Tiny()).load(cut)

    from safetensors.torch import save_file

    st = str(tmp_path / "model.safetensors")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, st)
    other = _Tiny()
    GeoCheckpointer(other).load(st)
    for k, v in model.state_dict().items():
        assert torch.equal(other.state_dict()[k], v)


def test_init_checkpoint_of_another_model_is_refused(tmp_path):
    # a model whose encoder is wider: every encoder tensor has another shape
    wide = str(tmp_path / "wide.pth")
    torch.save({"model": _Tiny(embed_dim=96, num_heads=3).state_dict()}, wide)
    with pytest.raises(CheckpointError, match="none of its .* encoder weights were loaded.*shapes differ"):
        GeoCheckpointer(_Tiny()).load(wide)
    # an upstream encoder checkpoint given as train.init_checkpoint: no key matches
    upstream = str(tmp_path / "dinov2_upstream.pth")
    torch.save(build_encoder("dinov2_test", **TINY).vit.state_dict(), upstream)
    with pytest.raises(CheckpointError, match="model.backbone.net.weights"):
        GeoCheckpointer(_Tiny()).load(upstream)
    # a checkpoint of this model with another head still loads (fine-tuning to new classes)
    sd = _Tiny().state_dict()
    sd["head.weight"] = torch.zeros(5, 4)
    ok = str(tmp_path / "other_head.pth")
    torch.save({"model": sd}, ok)
    GeoCheckpointer(_Tiny()).load(ok)


def _calls(tree, name):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            dotted = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
            if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name):
                dotted = f"{f.value.id}.{f.attr}"
            if dotted == name:
                yield node


def test_every_torch_load_in_the_source_tree_is_weights_only():
    files = [p for d in ("d2geo", "tools", "benchmarks", "tests", "configs")
             for p in glob.glob(os.path.join(ROOT, d, "**", "*.py"), recursive=True)]
    assert len(files) > 30
    offenders, unpickling, checkpointers = [], [], []
    for path in files:
        tree = ast.parse(open(path, encoding="utf-8").read(), path)
        rel = os.path.relpath(path, ROOT)
        for call in _calls(tree, "torch.load"):
            kw = {k.arg: k.value for k in call.keywords}
            value = kw.get("weights_only")
            if not (isinstance(value, ast.Constant) and value.value is True):
                offenders.append(f"{rel}:{call.lineno}")
        for name in ("pickle.load", "pickle.loads"):
            unpickling += [f"{rel}:{c.lineno}" for c in _calls(tree, name)]
        if not rel.startswith(("tests", os.path.join("d2geo", "engine"))):
            checkpointers += [f"{rel}:{c.lineno}" for c in _calls(tree, "DetectionCheckpointer")]
    assert not offenders, f"torch.load without weights_only=True: {offenders}"
    assert not unpickling, f"pickle.load of files: {unpickling}"
    assert not checkpointers, f"DetectionCheckpointer (reads .pkl pickles) instead of GeoCheckpointer: {checkpointers}"


def test_checkpointer_maps_saved_patch_kernels_by_band_name(tmp_path):
    """A whole-model checkpoint (GeoCheckpointer) records the encoder's band names; a model of
    the same bands in another order loads the kernels by name (issue 26 item 8)."""
    kw = dict(depth=1, img_size=32)
    torch.manual_seed(0)
    a = GeoBackbone(build_encoder("ssl4eo_test", bands=["B04", "B03", "B02"], **kw), layers=(0,)).eval()
    with torch.no_grad():
        for p in a.parameters():
            p.add_(0.05 * torch.randn_like(p))
    GeoCheckpointer(a, str(tmp_path)).save("model_final")
    b = GeoBackbone(build_encoder("ssl4eo_test", bands=["B02", "B04", "B03"], **kw), layers=(0,)).eval()
    GeoCheckpointer(b).load(str(tmp_path / "model_final.pth"))
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        want, got = a(x), b(x[:, [2, 0, 1]])
    for k in want:
        assert (got[k] - want[k]).abs().max() <= 1e-5 * want[k].abs().max()
