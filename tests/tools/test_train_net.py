"""tools/train_net.py (train, evaluate, resume, two CPU processes) and
tools/convert_checkpoint.py (upstream checkpoint -> model-zoo file)."""
from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import subprocess
import sys

import pytest
import torch

pytest.importorskip("detectron2", reason="detectron2 is not installed: see README for installing it from source")

from detectron2.checkpoint import DetectionCheckpointer  # noqa: E402
from detectron2.config import LazyConfig, instantiate  # noqa: E402

from d2geo.data.synthetic import SYNTH_BANDS  # noqa: E402
from d2geo.encoders import build_encoder  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DET = os.path.join(ROOT, "configs", "quickstart", "mask_rcnn_tiny.py")
SEG = os.path.join(ROOT, "configs", "quickstart", "semantic_fpn_tiny.py")


from d2geo.cli import convert as convert_checkpoint  # noqa: E402
from d2geo.cli import train as train_net  # noqa: E402
from d2geo.engine import hooks as train_hooks  # noqa: E402
from d2geo.engine import train_loop  # noqa: E402


def run_main(*argv):
    return train_loop.run(train_net.get_parser().parse_args(list(argv)))


def metrics(output_dir):
    with open(os.path.join(output_dir, "metrics.json")) as f:
        return [json.loads(line) for line in f if line.strip()]


def losses(rows):
    return [r["total_loss"] for r in rows if "total_loss" in r]


@pytest.fixture(scope="module", autouse=True)
def synthetic_cache(tmp_path_factory):
    """The quickstart's GeoTIFFs go to one folder per test session, not to ./datasets
    (the variable reaches the training subprocesses too)."""
    with pytest.MonkeyPatch.context() as m:
        m.setenv("D2GEO_DATASETS", str(tmp_path_factory.getbasetemp() / "d2geo_datasets"))
        yield


# -- training and evaluation ---------------------------------------------------------------
@pytest.fixture(scope="module")
def det_run(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("det"))
    results = run_main("--config-file", DET, f"train.output_dir={out}", "train.max_iter=14",
                       "train.log_period=1", "train.eval_period=0", "train.checkpointer.period=100")
    return out, results


def test_detection_trains_with_falling_loss_and_reports_ap(det_run):
    out, results = det_run
    rows = metrics(out)
    loss = losses(rows)
    assert len(loss) == 14
    # the logged losses are running medians: the last one summarises the whole run
    assert loss[-1] < 0.8 * loss[0], loss
    assert {"bbox", "segm"} <= set(results)
    assert 0.0 <= results["bbox"]["AP"] <= 100.0
    assert any("bbox/AP" in r for r in rows)  # the final evaluation is logged too
    assert os.path.isfile(os.path.join(out, "model_final.pth"))
    saved = LazyConfig.load(os.path.join(out, "config.yaml"))
    assert saved.train.device == "cpu" or torch.cuda.is_available()


def test_eval_only_reloads_the_checkpoint_and_reproduces_the_results(det_run):
    out, results = det_run
    final = os.path.join(out, "model_final.pth")
    again = run_main("--config-file", DET, "--eval-only", f"train.init_checkpoint={final}",
                     f"train.output_dir={out}/eval")
    assert again["bbox"]["AP"] == pytest.approx(results["bbox"]["AP"], abs=1e-6)
    assert again["segm"]["AP"] == pytest.approx(results["segm"]["AP"], abs=1e-6)
    # without weights the evaluation of an untrained model is refused
    with pytest.raises(SystemExit, match="needs weights"):
        run_main("--config-file", DET, "--eval-only", f"train.output_dir={out}/empty")


def test_segmentation_trains_with_falling_loss_and_reports_miou(tmp_path):
    out = str(tmp_path)
    results = run_main("--config-file", SEG, f"train.output_dir={out}", "train.max_iter=12",
                       "train.log_period=1", "train.eval_period=0")
    loss = losses(metrics(out))
    assert len(loss) == 12 and loss[-1] < 0.8 * loss[0], loss
    miou = results["sem_seg"]["mIoU"]
    assert 0.0 <= miou <= 100.0 and "IoU-water" in results["sem_seg"]


def test_resume_continues_after_the_last_checkpoint(tmp_path):
    out = str(tmp_path)
    common = [f"train.output_dir={out}", "train.log_period=1", "train.eval_period=0",
              "train.checkpointer.period=2"]
    run_main("--config-file", SEG, *common, "train.max_iter=4")
    first = [r["iteration"] for r in metrics(out) if "total_loss" in r]
    assert first == [0, 1, 2, 3]
    with open(os.path.join(out, "last_checkpoint")) as f:
        assert f.read().strip() == "model_final.pth"
    stored = torch.load(os.path.join(out, "model_final.pth"), weights_only=True)
    assert stored["iteration"] == 3

    run_main("--config-file", SEG, "--resume", *common, "train.max_iter=6")
    second = [r["iteration"] for r in metrics(out) if "total_loss" in r][len(first):]
    assert second == [4, 5]  # resumed after iteration 3, not from scratch
    stored = torch.load(os.path.join(out, "model_final.pth"), weights_only=True)
    assert stored["iteration"] == 5


def test_cuda_device_falls_back_to_cpu(caplog):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    cfg = LazyConfig.load(SEG)
    cfg.train.device = "cuda"
    cfg.train.amp.enabled = True
    assert train_loop.resolve_device(cfg) == "cpu"
    assert cfg.train.device == "cpu" and cfg.train.amp.enabled  # autocast works on the CPU too


def test_bfloat16_autocast_and_checkpointing_train_from_the_command_line(tmp_path, monkeypatch):
    from d2geo.engine.amp import AutocastTrainer

    used = []
    real_run_step = AutocastTrainer.run_step

    def spy(self):
        used.append(self.precision)
        return real_run_step(self)

    monkeypatch.setattr(AutocastTrainer, "run_step", spy)
    out = str(tmp_path)
    run_main("--config-file", SEG, f"train.output_dir={out}", "train.max_iter=10", "train.log_period=1",
             "train.eval_period=0", "train.amp.enabled=True", "train.amp.precision=bfloat16",
             "model.backbone.net.grad_checkpointing=True")
    loss = losses(metrics(out))
    assert used == [torch.bfloat16] * 10, used
    assert len(loss) == 10 and all(l == l for l in loss) and loss[-1] < loss[0], loss


def test_process_count_is_checked():
    with pytest.raises(SystemExit, match="at least 1"):
        train_net.check_process_count(0)
    args = train_net.get_parser().parse_args(["--num-processes", "3"])
    assert args.num_gpus == 3


def test_two_cpu_processes_train_to_the_end(tmp_path):
    """Slowest test here (two fresh interpreters): DDP over gloo on the CPU."""
    out = str(tmp_path)
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    cmd = [sys.executable, os.path.join(ROOT, "tools", "train_net.py"), "--config-file", SEG,
           "--num-gpus", "2", "--dist-url", "auto", f"train.output_dir={out}", "train.max_iter=4",
           "train.log_period=1", "train.eval_period=0", "dataloader.train.total_batch_size=4"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=360)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(os.path.join(out, "log.txt")) as f:
        log = f.read()
    assert "World size: 2" in log
    rows = metrics(out)
    assert [r["iteration"] for r in rows if "total_loss" in r] == [0, 1, 2, 3]
    assert any("sem_seg/mIoU" in r for r in rows)  # evaluated over both processes' shards
    assert os.path.isfile(os.path.join(out, "model_final.pth"))


def test_ctrl_c_handler_does_no_io_and_the_step_end_logs_and_stops(monkeypatch):
    """The SIGINT handler runs wherever the main thread is, also inside a write to the log file
    (a log call there raised "reentrant call inside BufferedWriter" and crashed the run): it
    only sets a flag; the end of the step logs, writes the checkpoint and stops."""
    import signal
    import types

    records = []

    class Logger:  # the tool's logger, recording every call whatever the logging setup
        def __getattr__(self, level):
            return lambda msg, *args, **kw: records.append((level, msg % args))

    monkeypatch.setattr(train_hooks, "logger", Logger())
    saved = []
    hook = train_hooks.StopOnCtrlC(types.SimpleNamespace(save=lambda name, **kw: saved.append(name),
                                                       save_dir="/ckpt"))
    hook.trainer = types.SimpleNamespace(iter=7)
    hook._handler(signal.SIGINT, None)
    assert hook.requested and records == [] and saved == []
    with pytest.raises(train_hooks.TrainingInterrupted) as e:
        hook.after_step()
    assert saved == ["model_0000007"] and e.value.iteration == 7
    assert [lvl for lvl, msg in records if "iteration 7 finished" in msg] == ["warning"]


def test_ctrl_c_writes_a_checkpoint_and_prints_the_resume_command(tmp_path):
    """A real Ctrl-C (SIGINT) during training: no traceback, a checkpoint of the finished
    iteration, and a --resume command that continues right after it; third-party start-up
    noise is filtered, d2geo's own warnings are not."""
    import shlex
    import signal
    import time

    out = str(tmp_path / "run")
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    env.pop("D2GEO_ALL_WARNINGS", None)
    cmd = [sys.executable, os.path.join(ROOT, "tools", "train_net.py"), "--config-file", SEG,
           f"train.output_dir={out}", "train.max_iter=1000", "train.log_period=1", "train.eval_period=0"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    lines = []
    deadline = time.monotonic() + 300
    for line in proc.stdout:
        lines.append(line)
        if " iter: 1 " in line:
            proc.send_signal(signal.SIGINT)
            break
        assert time.monotonic() < deadline, "".join(lines[-20:])
    lines += proc.stdout.readlines()
    assert proc.wait(timeout=120) == 130
    text = "".join(lines)
    assert "Traceback" not in text and "KeyboardInterrupt" not in text, text[-3000:]
    m = re.search(r"stopped after iteration (\d+); checkpoint written to (\S+)\. Continue with:\n  (.*)\n", text)
    assert m, text[-2000:]
    stopped, ckpt, command = int(m.group(1)), m.group(2), m.group(3)
    assert stopped >= 1 and os.path.isfile(ckpt)
    assert torch.load(ckpt, weights_only=True)["iteration"] == stopped
    with open(os.path.join(out, "last_checkpoint")) as f:
        assert f.read().strip() == os.path.basename(ckpt)
    argv = shlex.split(command)
    assert argv[:2] == ["python", os.path.join(ROOT, "tools", "train_net.py")] and "--resume" in argv
    # the start-up noise of torch/detectron2 is gone from the log
    for noise in ("torch.jit.script` is deprecated", "No CUDA runtime is found", "pkg_resources is deprecated",
                  "torch.meshgrid: in an upcoming release"):
        assert noise not in text, noise
    # the printed command continues after the checkpoint
    rest = subprocess.run([sys.executable] + argv[1:] + [f"train.max_iter={stopped + 2}"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert rest.returncode == 0, rest.stderr[-3000:]
    iters = [r["iteration"] for r in metrics(out) if "total_loss" in r]
    assert iters[-1:] == [stopped + 1] and iters.count(stopped + 1) == 1


def test_resume_command_keeps_the_arguments_and_puts_resume_before_the_overrides():
    import shlex

    cmd = train_net.resume_command(["--config-file", "c.py", "train.max_iter=5", "a.b='x y'"],
                                   prog="python tools/train_net.py")
    assert shlex.split(cmd)[2:] == ["--config-file", "c.py", "--resume", "train.max_iter=5", "a.b='x y'"]
    assert train_net.resume_command(["--config-file", "c.py", "--resume"]).count("--resume") == 1
    # started as the console script, the command to continue is the console script's
    assert shlex.split(train_net.resume_command(["--config-file", "c.py"], prog="d2geo-train")) == [
        "d2geo-train", "--config-file", "c.py", "--resume"]


# -- checkpoint conversion -----------------------------------------------------------------
def upstream_checkpoint(path, embed_dim=96):
    """An official-layout DINOv2 checkpoint (RGB, 14-pixel patches, 37x37 positions)."""
    enc = build_encoder("dinov2_vits14", embed_dim=embed_dim, depth=4, num_heads=embed_dim // 32)
    sd = dict(enc.vit.state_dict())
    sd["mask_token"] = torch.zeros(1, embed_dim)
    torch.save(sd, path)
    return str(path)


def test_convert_checkpoint_writes_a_zoo_file_that_loads_into_the_model(tmp_path):
    src = upstream_checkpoint(tmp_path / "dinov2_tiny_pretrain.pth")
    out_dir = tmp_path / "zoo"
    path = convert_checkpoint.main([src, "--config-file", DET, "--output-dir", str(out_dir)])
    name = os.path.basename(path)
    m = re.fullmatch(r"dinov2_vits14_mask_rcnn_tiny-([0-9a-f]{8})\.pth", name)
    assert m, name
    assert hashlib.sha256(open(path, "rb").read()).hexdigest().startswith(m.group(1))
    assert sorted(os.listdir(out_dir)) == [name]  # no temporary file left behind

    ckpt = torch.load(path, weights_only=True)
    assert ckpt["matching_heuristics"] is False and ckpt["__author__"]
    assert ckpt["d2geo"]["encoder"] == "dinov2_vits14"
    assert all(k.startswith("backbone.net.encoder.") for k in ckpt["model"])

    cfg = LazyConfig.load(DET)
    torch.manual_seed(1)
    model = instantiate(cfg.model).eval()
    wanted = {k for k in model.state_dict() if k.startswith("backbone.net.encoder.")}
    assert wanted == set(ckpt["model"])  # zero missing, zero unexpected backbone keys
    DetectionCheckpointer(model).load(path)

    kwargs = dict(cfg.model.backbone.net.encoder_kwargs)
    ref = build_encoder("dinov2_vits14", weights=src, **kwargs).eval()
    x = torch.randn(2, len(SYNTH_BANDS), 48, 64)
    with torch.no_grad():
        ours = model.backbone.net.encoder.forward_features(x, layers=[1, 3])
        theirs = ref.forward_features(x, layers=[1, 3])
    for a, b in zip(ours, theirs):
        assert torch.equal(a, b)


def test_convert_checkpoint_refuses_a_checkpoint_that_does_not_fit(tmp_path):
    out_dir = tmp_path / "zoo"
    narrow = upstream_checkpoint(tmp_path / "narrow.pth", embed_dim=64)
    with pytest.raises(SystemExit, match=r"does not fit DINOv2Encoder: shapes differ .*\(1, 1, 64\)"):
        convert_checkpoint.main([narrow, "--config-file", DET, "--output-dir", str(out_dir)])
    other = tmp_path / "other.pth"
    torch.save({"state_dict": {"decoder.conv.weight": torch.zeros(3, 3)}}, other)
    with pytest.raises(SystemExit, match="no 'patch_embed.proj.weight' in the checkpoint"):
        convert_checkpoint.main([str(other), "--config-file", DET, "--output-dir", str(out_dir)])
    assert not glob.glob(str(out_dir / "*"))  # nothing written


def test_convert_checkpoint_without_a_config(tmp_path):
    src = upstream_checkpoint(tmp_path / "up.pth")
    kwargs = json.dumps(dict(embed_dim=96, num_heads=3, depth=4, patch_size=16))
    path = convert_checkpoint.main([src, "--encoder", "dinov2_vits14", "--encoder-kwargs", kwargs,
                                    "--prefix", "backbone.bottom_up.", "--output-dir", str(tmp_path),
                                    "--name", "tiny"])
    assert re.fullmatch(r"tiny-[0-9a-f]{8}\.pth", os.path.basename(path))
    keys = torch.load(path, weights_only=True)["model"]
    assert keys["backbone.bottom_up.encoder.vit.patch_embed.proj.weight"].shape == (96, 3, 16, 16)
    with pytest.raises(SystemExit, match="must end with '.'"):
        convert_checkpoint.main([src, "--encoder", "dinov2_vits14", "--encoder-kwargs", kwargs,
                                 "--prefix", "backbone", "--output-dir", str(tmp_path)])
    with pytest.raises(SystemExit, match="give --config-file, or --encoder and --prefix"):
        convert_checkpoint.main([src, "--encoder", "dinov2_vits14"])


def test_config_file_may_be_a_zoo_name():
    from d2geo import model_zoo

    name = "quickstart/mask_rcnn_tiny.py"
    assert train_net.resolve_config_file(name) == model_zoo.get_config_file(name)
    assert train_net.resolve_config_file(DET) == DET
    with pytest.raises(FileNotFoundError, match="neither a file nor a config of the d2geo model zoo"):
        train_net.resolve_config_file("quickstart/does_not_exist.py")


def test_training_runs_from_a_zoo_name(tmp_path, monkeypatch):
    """``--config-file quickstart/semantic_fpn_tiny.py`` from any folder (an installed d2geo has no
    configs/ beside it): detectron2's setup used to open the name as a path and fail."""
    monkeypatch.chdir(tmp_path)
    out = str(tmp_path / "out")
    run_main("--config-file", "quickstart/semantic_fpn_tiny.py", f"train.output_dir={out}", "train.max_iter=1",
             "train.eval_period=0")
    assert os.path.isfile(os.path.join(out, "model_final.pth"))
    with open(os.path.join(out, "config.yaml")) as f:
        assert "sem_seg_head" in f.read()  # the zoo config was saved with the run
