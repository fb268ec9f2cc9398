"""d2geo.model_zoo: packaged configs and ``d2geo://`` checkpoints (download, mirror, sha256)."""
from __future__ import annotations

import hashlib
import http.server
import os
import re
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
from http_stub import HubStandIn, serve

pytest.importorskip("detectron2", reason="detectron2 is not installed: see README for installing it from source")

from detectron2.checkpoint import DetectionCheckpointer  # noqa: E402
from detectron2.config import instantiate  # noqa: E402
from detectron2.utils.file_io import PathManager  # noqa: E402

from d2geo import model_zoo  # noqa: E402
from d2geo.model_zoo import ChecksumError, D2GeoZooHandler  # noqa: E402
from d2geo.model_zoo.checkpoints import expected_digest  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


# -- configs -----------------------------------------------------------------------------------
def test_get_config_and_file():
    path = model_zoo.get_config_file("dinov2/mask_rcnn_vitb14.py")
    assert os.path.isfile(path) and path.endswith(os.path.join("dinov2", "mask_rcnn_vitb14.py"))
    cfg = model_zoo.get_config("dinov2/mask_rcnn_vitb14.py")
    assert cfg.model.backbone.net.encoder == "dinov2_vitb14"
    assert {"model", "dataloader", "optimizer", "lr_multiplier", "train"} <= set(cfg)
    with pytest.raises(RuntimeError, match="Did you mean dinov2/mask_rcnn_vitb14.py"):
        model_zoo.get_config_file("dinov2/mask_rcnn_vitb16.py")
    with pytest.raises(ValueError, match="LazyConfig .py"):
        model_zoo.get_config("dinov2/mask_rcnn_vitb14.yaml")


@pytest.mark.slow  # builds a wheel (~20 s)
def test_built_package_ships_the_configs(tmp_path):
    """setup.py's build step copies configs/ into d2geo/model_zoo/configs, and the zoo reads
    them from there when d2geo is not a source checkout."""
    build = tmp_path / "lib"
    proc = subprocess.run([sys.executable, "setup.py", "-q", "build_py", "--build-lib", str(build)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    packaged = build / "d2geo" / "model_zoo" / "configs"
    assert (packaged / "common" / "models" / "mask_rcnn_geo.py").is_file()
    assert (packaged / "quickstart" / "semantic_fpn_tiny.py").is_file()
    code = ("from d2geo import model_zoo; root = model_zoo.config_root(); "
            "cfg = model_zoo.get_config('clay/semantic_fpn_v1_5_large.py'); "
            "print(root); print(cfg.model.backbone.net.encoder)")
    env = dict(os.environ, PYTHONPATH=str(build))
    proc = subprocess.run([sys.executable, "-c", code], cwd=str(tmp_path), env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    root, encoder = proc.stdout.split()[-2:]
    assert root == str(packaged) and encoder == "clay_v1_5_large"


# -- d2geo:// ----------------------------------------------------------------------------------
@pytest.fixture
def zoo(tmp_path, monkeypatch):
    """A zoo served over HTTP on 127.0.0.1 (a thread, shut down after the test)."""
    served = tmp_path / "served"
    (served / "zoo").mkdir(parents=True)
    hits: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(served), **kwargs)

        def log_message(self, *args):
            pass

        def do_GET(self):
            hits.append(self.path)
            if "truncated" in self.path:  # promise more bytes than are sent, then hang up
                body = b"x" * 1000
                self.send_response(200)
                self.send_header("Content-Length", str(len(body) * 4))
                self.end_headers()
                self.wfile.write(body)
                self.wfile.flush()
                self.close_connection = True
                return
            super().do_GET()

    with serve(Handler) as url:
        cache = tmp_path / "cache"
        monkeypatch.setenv("FVCORE_CACHE", str(cache))
        monkeypatch.setenv("D2GEO_ZOO_URL", f"{url}/zoo")
        monkeypatch.delenv("D2GEO_ZOO_MIRROR", raising=False)
        yield SimpleNamespace(root=served / "zoo", hits=hits, cache=cache / "d2geo")


def publish(root, rel_dir, stem, payload: bytes, *, digest_of: bytes | None = None) -> str:
    """Write ``payload`` as ``stem-<sha256[:8]>.pth`` (of ``digest_of`` if given); return d2geo://."""
    digest = hashlib.sha256(payload if digest_of is None else digest_of).hexdigest()[:8]
    name = f"{stem}-{digest}.pth"
    (root / rel_dir).mkdir(parents=True, exist_ok=True)
    (root / rel_dir / name).write_bytes(payload)
    return f"d2geo://{rel_dir}/{name}"


def leftovers(cache):
    """Files in the cache other than lock files, and staging directories."""
    out = []
    for dirpath, dirnames, filenames in os.walk(cache):
        out += [os.path.join(dirpath, d) for d in dirnames if d.startswith(".download-")]
        out += [os.path.join(dirpath, f) for f in filenames if not f.endswith(".lock")]
    return out


def test_download_is_verified_and_cached(zoo):
    payload = os.urandom(5000)
    uri = publish(zoo.root, "dinov2", "weights", payload)
    local = PathManager.get_local_path(uri)
    assert local == os.path.join(str(zoo.cache), "dinov2", os.path.basename(uri))
    assert open(local, "rb").read() == payload
    assert len(zoo.hits) == 1
    assert PathManager.get_local_path(uri) == local and len(zoo.hits) == 1  # served from the cache
    with PathManager.open(uri, "rb") as f:
        assert f.read() == payload
    with pytest.raises(ValueError, match="read-only"):
        PathManager.open(uri, "wb")


def test_corrupted_download_is_refused_and_not_kept(zoo):
    good = os.urandom(4000)
    bad = bytearray(good)
    bad[100] ^= 0xFF
    uri = publish(zoo.root, "prithvi", "weights", bytes(bad), digest_of=good)
    with pytest.raises(ChecksumError, match="corrupted or truncated"):
        PathManager.get_local_path(uri)
    assert leftovers(zoo.cache) == []
    # once the server has the right file, the same path downloads fine
    publish(zoo.root, "prithvi", "weights", good)
    assert open(PathManager.get_local_path(uri), "rb").read() == good


def test_truncated_and_missing_downloads_leave_nothing(zoo):
    with pytest.raises(OSError):
        PathManager.get_local_path("d2geo://clay/truncated-0123abcd.pth")
    with pytest.raises(OSError):
        PathManager.get_local_path("d2geo://clay/absent-0123abcd.pth")
    assert leftovers(zoo.cache) == []


def test_local_mirror(zoo, monkeypatch):
    payload = os.urandom(3000)
    uri = publish(zoo.root, "clay", "weights", payload)
    monkeypatch.setenv("D2GEO_ZOO_MIRROR", str(zoo.root))
    local = PathManager.get_local_path(uri)
    assert local == os.path.join(str(zoo.root), "clay", os.path.basename(uri))
    assert zoo.hits == []  # nothing downloaded
    with pytest.raises(FileNotFoundError, match="D2GEO_ZOO_MIRROR"):
        PathManager.get_local_path("d2geo://clay/other-0123abcd.pth")
    bad = publish(zoo.root, "clay", "broken", b"not what the name says", digest_of=b"original")
    with pytest.raises(ChecksumError):
        PathManager.get_local_path(bad)


@pytest.mark.parametrize("bad", ["d2geo://", "d2geo://../secret.pth", "d2geo:///abs.pth",
                                 "d2geo://a//b.pth", "d2geo://a/b.pth?x=1"])
def test_invalid_zoo_paths(bad, zoo):
    with pytest.raises(ValueError, match="not a valid zoo path"):
        PathManager.get_local_path(bad)
    assert not PathManager.exists(bad) and not PathManager.isfile(bad)  # not an error, just no file


def test_zoo_and_hub_files_are_read_only():
    from d2geo.model_zoo import HFHubHandler

    for handler, path in ((D2GeoZooHandler(), "d2geo://dinov2/x-1a2b3c4d.pth"), (HFHubHandler(), "hf://org/repo/x.pth")):
        for mode in ("w", "ab", "r+", "x"):
            message = f"^{handler.PREFIX}.*read-only.*cannot open {re.escape(path)} with mode {re.escape(repr(mode))}$"
            with pytest.raises(ValueError, match=message):
                handler._open(path, mode)


def test_digest_in_names():
    assert expected_digest("dinov2_vitb14-1a2b3c4d.pth") == "1a2b3c4d"
    assert expected_digest("a-b/c-deadbeef00.safetensors") == "deadbeef00"
    assert expected_digest("no_digest.pth") is None
    assert D2GeoZooHandler.PREFIX in PathManager._path_handlers


def test_detection_checkpointer_loads_a_zoo_checkpoint(zoo, tmp_path):
    """The converter's output, served as a zoo file, loads into the config's model."""

    from d2geo.encoders import build_encoder

    enc = build_encoder("dinov2_vits14", embed_dim=96, depth=4, num_heads=3)
    upstream = tmp_path / "up.pth"
    torch.save(dict(enc.vit.state_dict()), upstream)
    from d2geo.cli import convert as tool
    config = os.path.join(ROOT, "configs", "quickstart", "semantic_fpn_tiny.py")
    written = tool.main([str(upstream), "--config-file", config, "--output-dir", str(zoo.root / "quickstart")])
    uri = "d2geo://quickstart/" + os.path.basename(written)

    model = instantiate(model_zoo.get_config("quickstart/semantic_fpn_tiny.py").model)
    DetectionCheckpointer(model).load(uri)
    stored = torch.load(written, weights_only=True)["model"]
    state = model.state_dict()
    for key, value in stored.items():
        assert torch.equal(state[key], value), key
    assert len(zoo.hits) == 1


# -- hf:// ---------------------------------------------------------------------------------------
@pytest.fixture
def hub(tmp_path, monkeypatch):
    """A Hugging Face Hub stand-in on 127.0.0.1, with the Hub cache in tmp_path."""
    stand_in = HubStandIn()
    with serve(stand_in.handler()) as url:
        stand_in.url = url
        monkeypatch.setenv("HF_ENDPOINT", url)
        monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
        monkeypatch.setenv("D2GEO_CACHE", str(tmp_path / "d2geo"))
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        yield stand_in


def test_importing_d2geo_modeling_registers_hf_paths_on_pathmanager(hub, tmp_path):
    """In a fresh process, ``import d2geo.modeling`` alone makes detectron2's PathManager
    (and so DetectionCheckpointer and every detectron2 tool) read hf:// and d2geo:// paths."""
    payload = os.urandom(3000)
    uri = hub.publish("acme/zoo", "models/w.pth", payload)
    code = ("import d2geo.modeling\n"
            "from detectron2.utils.file_io import PathManager\n"
            f"print(PathManager.get_local_path({uri!r}))\n"
            "print(sorted(p for p in PathManager._path_handlers if p in ('hf://', 'd2geo://')))\n")
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", code], cwd=str(tmp_path), env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    local, handlers = proc.stdout.strip().splitlines()[-2:]
    assert open(local, "rb").read() == payload
    assert local.startswith(str(tmp_path / "hf"))
    assert handlers == "['d2geo://', 'hf://']"
    # in this process too, through the same handler
    assert PathManager.get_local_path(uri) == local
    with PathManager.open(uri, "rb") as f:
        assert f.read() == payload
    with pytest.raises(ValueError, match="read-only"):
        PathManager.open(uri, "wb")


def _tiny_upstream_checkpoint(path):
    """A DINOv2-layout checkpoint that fits the quickstart's tiny encoder (any band set)."""
    from d2geo.encoders import build_encoder

    torch.manual_seed(3)
    enc = build_encoder("dinov2_vits14", embed_dim=96, depth=4, num_heads=3)
    torch.save(dict(enc.vit.state_dict()), path)
    return open(path, "rb").read()


def test_detection_checkpointer_loads_an_hf_init_checkpoint(hub, tmp_path):

    upstream = tmp_path / "up.pth"
    _tiny_upstream_checkpoint(upstream)
    from d2geo.cli import convert as tool
    config = os.path.join(ROOT, "configs", "quickstart", "semantic_fpn_tiny.py")
    # the converter takes the upstream file as an hf:// path too
    up_uri = hub.publish("acme/upstream", "dinov2_tiny.pth", open(upstream, "rb").read())
    written = tool.main([up_uri, "--config-file", config, "--output-dir", str(tmp_path / "out")])
    assert torch.load(written, weights_only=True)["d2geo"]["source"] == up_uri
    uri = hub.publish("acme/finetuned", os.path.basename(written), open(written, "rb").read())

    cfg = model_zoo.get_config("quickstart/semantic_fpn_tiny.py")
    cfg.train.init_checkpoint = uri
    model = instantiate(cfg.model)
    DetectionCheckpointer(model).load(cfg.train.init_checkpoint)
    stored = torch.load(written, weights_only=True)["model"]
    state = model.state_dict()
    for key, value in stored.items():
        assert torch.equal(state[key], value), key


def test_config_trains_from_hf_encoder_weights(hub, tmp_path, monkeypatch):
    """model.backbone.net.weights="hf://..." in a config: the encoder starts from the Hub file
    and a couple of training iterations run."""
    from detectron2.engine import SimpleTrainer

    from d2geo.encoders import build_encoder

    monkeypatch.setenv("D2GEO_DATASETS", str(tmp_path / "datasets"))
    data = _tiny_upstream_checkpoint(tmp_path / "up.pth")
    uri = hub.publish("acme/tiny-dinov2", "dinov2_tiny.pth", data)
    cfg = model_zoo.get_config("quickstart/semantic_fpn_tiny.py")
    cfg.model.backbone.net.weights = uri
    cfg.dataloader.train.total_batch_size = 2
    model = instantiate(cfg.model)
    kwargs = dict(cfg.model.backbone.net.encoder_kwargs)
    ref = build_encoder("dinov2_vits14", weights=str(tmp_path / "up.pth"), **kwargs)
    assert torch.equal(model.backbone.net.encoder.vit.blocks[1].attn.qkv.weight, ref.vit.blocks[1].attn.qkv.weight)
    assert [m for m, _ in hub.file_requests()] == ["HEAD", "GET"]

    cfg.optimizer.params.model = model
    trainer = SimpleTrainer(model, instantiate(cfg.dataloader.train), instantiate(cfg.optimizer))
    before = model.backbone.net.encoder.vit.blocks[1].attn.qkv.weight.detach().clone()
    trainer.train(0, 2)
    losses = [v for v, _ in trainer.storage.history("total_loss").values()]
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
    assert not torch.equal(model.backbone.net.encoder.vit.blocks[1].attn.qkv.weight, before)


def test_skip_encoder_weights_for_whole_model_checkpoints():
    """--eval-only with train.init_checkpoint builds the model without fetching the published
    encoder weights first (the checkpoint replaces them)."""
    cfg = model_zoo.get_config("prithvi/semantic_fpn_eo_v2_300_tl.py")
    assert cfg.model.backbone.net.pretrained is True
    assert model_zoo.skip_encoder_weights(cfg.model) == ["model.backbone.net"]
    assert cfg.model.backbone.net.pretrained is False and cfg.model.backbone.net.weights is None
    assert model_zoo.skip_encoder_weights(cfg.model) == []


def test_eval_only_from_an_init_checkpoint_fetches_no_encoder_weights(tmp_path, monkeypatch):

    monkeypatch.setenv("D2GEO_DATASETS", str(tmp_path / "datasets"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a download attempt would fail the run
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # and nothing is cached there
    from d2geo.cli import train as tool
    from d2geo.engine.train_loop import run
    cfg = model_zoo.get_config("quickstart/semantic_fpn_tiny.py")
    model = instantiate(cfg.model)
    ckpt = str(tmp_path / "model.pth")
    DetectionCheckpointer(model, save_dir=str(tmp_path)).save("model")
    args = tool.get_parser().parse_args([
        "--config-file", model_zoo.get_config_file("quickstart/semantic_fpn_tiny.py"), "--eval-only", f"train.output_dir={tmp_path}",
        f"train.init_checkpoint={ckpt}", "model.backbone.net.pretrained=True"])
    # train_net's setup_logger stops the 'd2geo' logger from propagating: undo it for later tests
    import logging

    saved = {name: (lg.handlers[:], lg.propagate, lg.level) for name in ("d2geo", "detectron2", "fvcore")
             for lg in [logging.getLogger(name)]}
    try:
        results = run(args)
    finally:
        for name, (handlers, propagate, level) in saved.items():
            lg = logging.getLogger(name)
            lg.handlers[:] = handlers
            lg.propagate, lg.level = propagate, level
    assert "mIoU" in results["sem_seg"]


def test_yacs_config_takes_hf_weights_and_pretrained(hub, tmp_path, monkeypatch):
    from detectron2.config import get_cfg

    from d2geo.encoders import WeightsDownloadError, build_encoder
    from d2geo.modeling import add_d2geo_config, build_geo_backbone

    data = _tiny_upstream_checkpoint(tmp_path / "up.pth")
    cfg = add_d2geo_config(get_cfg())
    cfg.MODEL.D2GEO.ENCODER = "dinov2_vits14"
    cfg.MODEL.D2GEO.ENCODER_KWARGS.EMBED_DIM = 96
    cfg.MODEL.D2GEO.ENCODER_KWARGS.DEPTH = 4
    cfg.MODEL.D2GEO.ENCODER_KWARGS.NUM_HEADS = 3
    cfg.MODEL.D2GEO.WEIGHTS = hub.publish("acme/tiny", "tiny.pth", data)
    backbone = build_geo_backbone(cfg)
    ref = build_encoder("dinov2_vits14", weights=str(tmp_path / "up.pth"), embed_dim=96, depth=4, num_heads=3)
    assert torch.equal(backbone.encoder.vit.blocks[3].mlp.fc1.weight, ref.vit.blocks[3].mlp.fc1.weight)
    # PRETRAINED reaches the published source (here: offline, so it names the file it looked for)
    cfg.MODEL.D2GEO.WEIGHTS = None
    cfg.MODEL.D2GEO.PRETRAINED = True
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(WeightsDownloadError, match="dl.fbaipublicfiles.com/dinov2/dinov2_vits14/dinov2_vits14_pretrain.pth"):
        build_geo_backbone(cfg)


def test_convert_checkpoint_takes_the_encoders_published_weights(hub, tmp_path, monkeypatch):
    """``convert_checkpoint.py pretrained --config-file ...``: the config's encoder's published
    file, fetched and checked against its pin (here the table entry points at the stand-in)."""
    import hashlib

    from d2geo.encoders import PretrainedCfg, registry

    data = _tiny_upstream_checkpoint(tmp_path / "up.pth")
    uri = hub.publish("acme/published", "dinov2_tiny.pth", data)
    entry = registry._REGISTRY["dinov2_vits14"]
    pin = PretrainedCfg(source=uri, license="Apache-2.0", sha256=hashlib.sha256(data).hexdigest())
    monkeypatch.setitem(registry._REGISTRY, "dinov2_vits14", registry._Entry(entry.builder, entry.config, pin))
    from d2geo.cli import convert as tool
    config = os.path.join(ROOT, "configs", "quickstart", "semantic_fpn_tiny.py")
    written = tool.main(["pretrained", "--config-file", config, "--output-dir", str(tmp_path / "out")])
    meta = torch.load(written, weights_only=True)["d2geo"]
    assert meta["source"] == uri and meta["source_sha256"] == pin.sha256
    # a file that is not the pinned one is refused
    hub.publish("acme/published", "dinov2_tiny.pth", data + b"\0")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf2"))
    with pytest.raises(SystemExit, match="sha256 pinned for it is " + pin.sha256):
        tool.main(["pretrained", "--config-file", config, "--output-dir", str(tmp_path / "out")])


def test_convert_checkpoint_output_has_the_mode_a_plain_write_has(tmp_path):
    """Issue 26: the converter wrote 0600 files under umask 022 (others could not read a shared
    zoo); its output now has 0666 less the umask, as the other tools' outputs."""
    import importlib.util

    upstream = tmp_path / "up.pth"
    _tiny_upstream_checkpoint(upstream)
    from d2geo.cli import convert as tool
    old = os.umask(0o022)
    try:
        written = tool.main([str(upstream), "--encoder", "dinov2_vits14", "--prefix", "backbone.net.",
                             "--encoder-kwargs", '{"embed_dim": 96, "depth": 4, "num_heads": 3}',
                             "--output-dir", str(tmp_path / "zoo")])
    finally:
        os.umask(old)
    assert os.stat(written).st_mode & 0o777 == 0o644
    assert not [f for f in os.listdir(tmp_path / "zoo") if f != os.path.basename(written)]
def test_old_config_folder_names_still_resolve(caplog):
    """``dino_v2/...`` (the folder's old name) finds ``dinov2/...`` and says the new name."""
    import logging

    with caplog.at_level(logging.WARNING, logger="d2geo.model_zoo"):
        old = model_zoo.get_config_file("dino_v2/mask_rcnn_vitb14.py")
    assert old == model_zoo.get_config_file("dinov2/mask_rcnn_vitb14.py")
    assert "'dino_v2/mask_rcnn_vitb14.py' is now 'dinov2/mask_rcnn_vitb14.py'" in caplog.text
    assert model_zoo.get_config_file("dino_v3/mask_rcnn_vitl16_sat.py").endswith(
        os.path.join("dinov3", "mask_rcnn_vitl16_sat.py"))
    assert model_zoo.get_config_file("common/encoders/dino_v2.py").endswith(
        os.path.join("encoders", "dinov2.py"))
    assert model_zoo.get_config("dino_v2/semantic_fpn_vitb14.py").model.backbone.net.encoder == "dinov2_vitb14"
