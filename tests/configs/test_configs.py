"""Every config of the zoo builds its model (and, where its datasets exist, its data)."""
from __future__ import annotations

import contextlib
import os

import pytest
import torch

pytest.importorskip("detectron2", reason="detectron2 is not installed: see README for installing it from source")

from detectron2.config import LazyConfig, instantiate  # noqa: E402
from detectron2.structures import Instances  # noqa: E402
from detectron2.utils.events import EventStorage  # noqa: E402

from d2geo import model_zoo  # noqa: E402
from d2geo.encoders import CheckpointError  # noqa: E402
from d2geo.modeling import GeoBackbone, find_geo_backbones  # noqa: E402

FAMILY_CONFIGS = [
    "dinov2/mask_rcnn_vitb14.py",
    "dinov2/semantic_fpn_vitb14.py",
    "dinov3/mask_rcnn_vitl16_sat.py",
    "dinov3/semantic_fpn_vitl16_sat.py",
    "prithvi/mask_rcnn_eo_v2_300_tl.py",
    "prithvi/semantic_fpn_eo_v2_300_tl.py",
    "clay/mask_rcnn_v1_5_large.py",
    "clay/semantic_fpn_v1_5_large.py",
    "ssl4eo/mask_rcnn_vits16.py",
    "ssl4eo/semantic_fpn_vits16.py",
    "ssl4eo/mask_rcnn_vits16_data2vec.py",
    "ssl4eo/semantic_fpn_vits16_data2vec.py",
    "scale_mae/mask_rcnn_vitl16.py",
    "scale_mae/semantic_fpn_vitl16.py",
    "satlas/mask_rcnn_swinb.py",
    "satlas/semantic_fpn_swinb.py",
    "dofa/mask_rcnn_vitb16.py",
    "dofa/semantic_fpn_vitb16.py",
    "terramind/mask_rcnn_v1_base.py",
    "terramind/semantic_fpn_v1_base.py",
    "copernicusfm/mask_rcnn_vitb16.py",
    "copernicusfm/semantic_fpn_vitb16.py",
    "croma/mask_rcnn_base.py",
    "croma/semantic_fpn_base.py",
    "panopticon/mask_rcnn_vitb14.py",
    "panopticon/semantic_fpn_vitb14.py",
    "galileo/mask_rcnn_base.py",
    "galileo/semantic_fpn_base.py",
    "anysat/mask_rcnn_base.py",
    "anysat/semantic_fpn_base.py",
    "olmoearth/mask_rcnn_v1_base.py",
    "olmoearth/semantic_fpn_v1_base.py",
]
#: every family's UperNet config (the head swapped on the semantic FPN config; Satlas's Swin
#: stages feed the head without an FPN)
UPERNET_CONFIGS = [
    "dinov2/upernet_vitb14.py",
    "dinov3/upernet_vitl16_sat.py",
    "prithvi/upernet_eo_v2_300_tl.py",
    "clay/upernet_v1_5_large.py",
    "terramind/upernet_v1_base.py",
    "copernicusfm/upernet_vitb16.py",
    "croma/upernet_base.py",
    "galileo/upernet_base.py",
    "dofa/upernet_vitb16.py",
    "satlas/upernet_swinb.py",
    "scale_mae/upernet_vitl16.py",
    "ssl4eo/upernet_vits16.py",
    "ssl4eo/upernet_vits16_data2vec.py",
    "panopticon/upernet_vitb14.py",
    "anysat/upernet_base.py",
    "olmoearth/upernet_v1_base.py",
]
QUICKSTART = ["quickstart/mask_rcnn_tiny.py", "quickstart/semantic_fpn_tiny.py"]
EXPECTED_ENCODERS = {
    "dinov2": ("dinov2_vitb14", 12, 768), "dinov3": ("dinov3_vitl16_sat", 24, 1024),
    "prithvi": ("prithvi_eo_v2_300_tl", 24, 1024), "clay": ("clay_v1_5_large", 24, 1024),
    "ssl4eo": ("ssl4eo_s12_vits16_dino", 12, 384),
    "scale_mae": ("scalemae_vitl16", 24, 1024),
    "satlas": ("satlas_swinb_sentinel2_si_ms", 4, 128),  # hierarchical: 4 stages, first-stage width
    "dofa": ("dofa_vitb16", 12, 768),
    "terramind": ("terramind_v1_base", 12, 768),
    "copernicusfm": ("copernicusfm_vitb16", 12, 768),
    "croma": ("croma_base", 6, 768),  # joint: the encoder's blocks are the joint encoder's 12 // 2
    "panopticon": ("panopticon_vitb14", 12, 768),
    "galileo": ("galileo_base", 12, 768),
    "anysat": ("anysat_base", 7, 768),  # 6 blocks and the cross-attention block
    "olmoearth": ("olmoearth_v1_base", 12, 768),
}
#: configs of a family folder that use another of its encoders
EXPECTED_BY_CONFIG = {
    "ssl4eo/mask_rcnn_vits16_data2vec.py": ("ssl4eo_s12_vits16_data2vec", 12, 384),
    "ssl4eo/semantic_fpn_vits16_data2vec.py": ("ssl4eo_s12_vits16_data2vec", 12, 384),
    "ssl4eo/upernet_vits16_data2vec.py": ("ssl4eo_s12_vits16_data2vec", 12, 384),
}


@contextlib.contextmanager
def cheap_init(monkeypatch):
    """Random init of 300M parameters takes seconds per model on a busy CPU; these tests
    check structure and wiring, so fill weights with a constant instead."""
    with monkeypatch.context() as m:
        m.setattr(torch.Tensor, "uniform_", lambda self, a=0.0, b=1.0, **kw: self.fill_(0.01 * (b - a)))
        m.setattr(torch.Tensor, "normal_", lambda self, mean=0.0, std=1.0, **kw: self.fill_(mean + 0.01 * std))
        m.setattr(torch.Tensor, "erfinv_", lambda self: self)
        yield


def load(name, **overrides):
    cfg = model_zoo.get_config(name)
    return LazyConfig.apply_overrides(cfg, [f"{k}={v}" for k, v in overrides.items()])


def test_zoo_lists_every_config():
    names = model_zoo.list_configs()
    for name in FAMILY_CONFIGS + UPERNET_CONFIGS + QUICKSTART + ["detrex_dino/dino_dinov2_vitb14.py"]:
        assert name in names
    # every family with a semantic FPN config has a UperNet config too
    families = {n.split("/")[0] for n in FAMILY_CONFIGS}
    assert families == {n.split("/")[0] for n in names if "/upernet_" in n} - {"quickstart"}
    assert not [n for n in names if n.startswith("common/")]
    # configs/README.md names every config, and its layout section every encoder fragment
    configs = os.path.join(os.path.dirname(__file__), "..", "..", "configs")
    readme = open(os.path.join(configs, "README.md"), encoding="utf-8").read()
    assert [n for n in names if f"`{n}`" not in readme] == []
    layout = readme[readme.index("## Layout"):]
    fragments = {f[:-3] for f in os.listdir(os.path.join(configs, "common", "encoders")) if f.endswith(".py")}
    assert [f for f in sorted(fragments - {"apply", "__init__"}) if f"`{f}`" not in layout] == []


def _sample_input(backbone: GeoBackbone, size: int = 64) -> dict:
    enc = backbone.encoder
    frames = getattr(enc, "num_frames", 1) if enc.input_ndim == 3 else None
    shape = (enc.in_chans, frames, size, size) if frames else (enc.in_chans, size, size)
    image = torch.rand(shape, generator=torch.Generator().manual_seed(0)) * 3000
    meta = {"timestamps": torch.tensor([1.6e9 + 2.6e6 * t for t in range(frames or 1)], dtype=torch.float64),
            "latlon": torch.tensor([47.5, 8.2]), "gsd": 10.0}
    return {"image": image, "height": size, "width": size, "metadata": meta}


@pytest.mark.slow
@pytest.mark.parametrize("name", FAMILY_CONFIGS + UPERNET_CONFIGS)
def test_family_config_builds_real_size_model_and_runs(name, monkeypatch):
    cfg = load(name)
    hierarchical = "bottom_up" in cfg.model.backbone  # detectron2's FPN on the GeoBackbone's res2..res5
    bare = "net" not in cfg.model.backbone and not hierarchical  # the GeoBackbone is the backbone
    node = cfg.model.backbone if bare else cfg.model.backbone.bottom_up if hierarchical else cfg.model.backbone.net
    family = name.split("/")[0]
    encoder, depth, width = EXPECTED_BY_CONFIG.get(name, EXPECTED_ENCODERS[family])
    assert node.encoder == encoder
    # user-facing configs load the published weights by name, they never silently train
    # from scratch (and never point at a local file the user does not have)
    assert node.pretrained is True and node.weights is None
    node.pretrained = False
    if "proposal_generator" in cfg.model:  # 1000 test proposals through a 4-conv box head is slow on a CPU
        cfg.model.proposal_generator.post_nms_topk = (1000, 20)
    with cheap_init(monkeypatch):
        model = instantiate(cfg.model)
    (backbone,) = find_geo_backbones(model)
    assert (model.backbone if bare else model.backbone.bottom_up if hierarchical else model.backbone.net) is backbone
    assert (backbone.encoder.depth, backbone.encoder.embed_dim) == (depth, width)
    assert len(backbone.encoder.bands) == len(cfg.model.pixel_mean) == len(cfg.model.pixel_std)
    assert cfg.dataloader.train.mapper.bands is None or list(cfg.dataloader.train.mapper.bands) == list(
        backbone.encoder.bands)

    model.eval()
    sample = _sample_input(backbone)
    with torch.no_grad():
        (out,) = model([sample])
    if "sem_seg_head" in cfg.model:
        assert out["sem_seg"].shape == (cfg.model.sem_seg_head.num_classes, 64, 64)
        assert torch.isfinite(out["sem_seg"]).all()
    else:
        assert isinstance(out["instances"], Instances)
        assert out["instances"].image_size == (64, 64)
        # p2..p6 for the RPN, p2..p5 for the ROI heads, whatever the patch size
        assert list(model.backbone.output_shape()) == ["p2", "p3", "p4", "p5", "p6"]
        assert {s.stride for s in model.backbone.output_shape().values()} == {4, 8, 16, 32, 64}

    # the file mappers build; the datasets are placeholders the user registers
    instantiate(cfg.dataloader.train.mapper)
    instantiate(cfg.dataloader.test.mapper)
    assert cfg.dataloader.train.dataset.names.startswith("geo_")


def test_family_config_missing_upstream_weights_is_a_clear_error():
    cfg = load("dinov2/semantic_fpn_vitb14.py")
    cfg.model.backbone.net.weights = "/nonexistent/dinov2_vitb14_pretrain.pth"
    with pytest.raises(CheckpointError, match="checkpoint file not found: /nonexistent/dinov2_vitb14"):
        instantiate(cfg.model)


def test_family_optimizer_has_layer_decay_and_no_decay_on_embeddings(monkeypatch):
    cfg = load("dinov2/mask_rcnn_vitb14.py")
    cfg.model.backbone.net.pretrained = False
    with cheap_init(monkeypatch):
        model = instantiate(cfg.model)
    cfg.optimizer.params.model = model
    opt = instantiate(cfg.optimizer)
    assert isinstance(opt, torch.optim.AdamW)
    names = {id(p): n for n, p in model.named_parameters()}
    by_name = {names[id(p)]: g for g in opt.param_groups for p in g["params"]}
    base = cfg.optimizer.lr
    pos = by_name["backbone.net.encoder.vit.pos_embed"]
    assert pos["weight_decay"] == 0.0
    assert pos["lr"] == pytest.approx(base * 0.7 ** 13)  # embeddings: layer 0 of 12 blocks
    block0 = by_name["backbone.net.encoder.vit.blocks.0.attn.qkv.weight"]
    assert block0["lr"] == pytest.approx(base * 0.7 ** 12) and block0["weight_decay"] == 0.1
    assert by_name["backbone.net.encoder.vit.blocks.0.norm1.weight"]["weight_decay"] == 0.0
    head = by_name["roi_heads.box_predictor.cls_score.weight"]
    assert head["lr"] == pytest.approx(base) and head["weight_decay"] == 0.1


@pytest.mark.parametrize("name", QUICKSTART)
def test_quickstart_config_builds_model_data_and_evaluator(name, tmp_path):
    torch.manual_seed(0)
    cfg = load(name, **{"train.output_dir": str(tmp_path)})
    assert cfg.model.backbone.net.weights is None  # runs without any download
    assert cfg.train.max_iter <= 2000  # a few minutes on 2 CPU cores (wall times in the README)
    model = instantiate(cfg.model)
    loader = instantiate(cfg.dataloader.train)
    batch = next(iter(loader))
    assert len(batch) == cfg.dataloader.train.total_batch_size
    assert batch[0]["image"].shape == (6, 96, 96) and batch[0]["image"].dtype == torch.float32
    assert set(batch[0]["metadata"]) == {"timestamps", "latlon", "gsd", "wavelengths"}
    model.train()
    with EventStorage():
        losses = model(batch)
    assert losses and all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    enc = model.backbone.net.encoder
    assert enc.vit.patch_embed.proj.weight.grad.abs().sum() > 0

    test_batch = next(iter(instantiate(cfg.dataloader.test)))
    assert "annotations" not in test_batch[0] and "instances" not in test_batch[0]
    evaluator = instantiate(cfg.dataloader.evaluator)
    evaluator.reset()
    model.eval()
    with torch.no_grad():
        evaluator.process(test_batch, model(test_batch))


def test_quickstart_saved_config_reloads(tmp_path):
    cfg = load("quickstart/semantic_fpn_tiny.py")
    path = str(tmp_path / "config.yaml")
    LazyConfig.save(cfg, path)
    again = LazyConfig.load(path)
    assert again.model.backbone.net.encoder_kwargs.patch_size == 8
    model = instantiate(again.model)
    assert model.sem_seg_head.predictor.out_channels == 4


def test_schedules_follow_max_iter():
    sched = model_zoo.get_config("quickstart/mask_rcnn_tiny.py").lr_multiplier
    step = instantiate(LazyConfig.load(model_zoo.get_config_file("common/schedule.py")).step)
    cosine = instantiate(sched)
    # defined on the fraction of training done, so any train.max_iter works
    assert step(0.5) == pytest.approx(1.0)
    assert step(0.9) == pytest.approx(0.1)
    assert step(0.97) == pytest.approx(0.01)
    assert cosine(0.0) == pytest.approx(0.001)
    assert cosine(0.5) < cosine(0.1) and cosine(1.0 - 1e-9) == pytest.approx(0.01, abs=1e-3)


@pytest.mark.slow
def test_detrex_dino_config():
    pytest.importorskip("detrex", reason="detrex is not installed (optional: install it from "
                                         "github.com/IDEA-Research/detrex as its docs say)")
    from d2geo.modeling.detrex import detrex_projects_root
    if detrex_projects_root() is None:
        pytest.skip("detrex is installed but not from a checkout with projects/dino (pip install -e)")
    cfg = load("detrex_dino/dino_dinov2_vitb14.py")
    cfg.model.backbone.net.pretrained = False
    model = instantiate(cfg.model)
    (backbone,) = find_geo_backbones(model)
    assert backbone.encoder.embed_dim == 768
    assert list(model.neck.convs) and len(model.neck.convs) == 4
    model.eval()
    # DINO keeps 900 two-stage proposals: the four levels need at least that many tokens
    with torch.no_grad():
        (out,) = model([_sample_input(backbone, size=256)])
    assert out["instances"].image_size == (256, 256)
    assert len(out["instances"]) > 0 and torch.isfinite(out["instances"].pred_boxes.tensor).all()


def test_config_root_is_the_source_tree_or_the_package():
    root = model_zoo.config_root()
    assert os.path.isfile(os.path.join(root, "common", "train.py"))


# -- the synthetic quickstart data -------------------------------------------------------------
@pytest.fixture(scope="module", autouse=True)
def synthetic_cache(tmp_path_factory):
    """The quickstart's GeoTIFFs go to one folder per test session, not to ./datasets."""
    with pytest.MonkeyPatch.context() as m:
        root = tmp_path_factory.getbasetemp() / "d2geo_datasets"
        m.setenv("D2GEO_DATASETS", str(root))
        yield root


def test_quickstart_datasets_are_geotiffs_generated_once(synthetic_cache):
    import numpy as np
    import rasterio
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from d2geo.data import synthetic

    a = DatasetCatalog.get("d2geo_synth_det_train")
    folder = synthetic.synthetic_dataset_dir()
    assert folder.startswith(str(synthetic_cache / "d2geo_synth"))
    manifest = os.path.join(folder, "manifest.json")
    stamp = os.path.getmtime(manifest)
    b = DatasetCatalog.get("d2geo_synth_det_train")
    assert a == b and len(a) == synthetic.BUILTIN_PARAMS["num_train"]
    assert os.path.getmtime(manifest) == stamp  # reused, not written again
    assert not [p for p in os.listdir(os.path.dirname(folder)) if ".tmp-" in p]  # no temporary folder left
    assert MetadataCatalog.get("d2geo_synth_det_val").thing_classes == ["building"]
    assert sum(len(r["annotations"]) for r in a) > len(a)  # a few buildings per tile
    with rasterio.open(a[0]["file_name"]) as src:  # real GeoTIFFs: CRS, transform, time, band names
        assert src.crs.to_epsg() == 32610 and src.transform.a == 10.0
        assert src.descriptions == synthetic.SYNTH_BANDS and "TIFFTAG_DATETIME" in src.tags()
    seg = DatasetCatalog.get("d2geo_synth_seg_val")
    assert len(seg) == synthetic.BUILTIN_PARAMS["num_val"]
    gt = MetadataCatalog.get("d2geo_synth_seg_val").sem_seg_loading_fn(seg[0]["sem_seg_file_name"], dtype=int)
    assert gt.shape == (96, 96) and set(np.unique(gt)) <= {0, 1, 2, 3, 255}
    assert len(np.unique(gt)) >= 2

    # a file deleted by hand: the dataset is incomplete and generated again, identically
    victim = seg[3]["sem_seg_file_name"]
    before = open(victim, "rb").read()
    os.remove(victim)
    assert DatasetCatalog.get("d2geo_synth_seg_val")[3]["sem_seg_file_name"] == victim
    assert open(victim, "rb").read() == before
    assert os.path.getmtime(manifest) != stamp


def test_interrupted_generation_leaves_no_dataset(tmp_path, monkeypatch):
    from d2geo.data import synthetic
    from d2geo.data.synthetic import cache

    monkeypatch.setenv("D2GEO_DATASETS", str(tmp_path))
    synthetic.register_synthetic("_test_synth_small", num_train=3, num_val=1, size=48, seed=4)
    real = cache.make_synthetic_dataset

    def dies_halfway(root, **kw):
        real(root, **kw)
        raise KeyboardInterrupt

    monkeypatch.setattr(cache, "make_synthetic_dataset", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        synthetic.ensure_synthetic_dataset("_test_synth_small")
    assert os.listdir(tmp_path / "d2geo_synth") == []  # neither the dataset nor a temporary folder
    monkeypatch.setattr(cache, "make_synthetic_dataset", real)
    ds = synthetic.ensure_synthetic_dataset("_test_synth_small")
    assert len(ds.splits["train"]) == 3 and os.path.isdir(ds.root)
    # the same prefix again: fine with the same parameters, an error with others
    synthetic.register_synthetic("_test_synth_small", num_train=3, num_val=1, size=48, seed=4)
    with pytest.raises(ValueError, match="already registered with other parameters"):
        synthetic.register_synthetic("_test_synth_small", num_train=4, num_val=1, size=48, seed=4)
    with pytest.raises(TypeError, match="unknown synthetic dataset parameters"):
        synthetic.register_synthetic("_test_synth_typo", num_trian=3)


def test_quickstart_mapper_reads_metadata_from_the_files():
    from detectron2.data import DatasetCatalog

    cfg = load("quickstart/semantic_fpn_tiny.py")
    mapper = instantiate(cfg.dataloader.test.mapper)
    record = DatasetCatalog.get("d2geo_synth_seg_val")[0]
    assert "geo" not in record  # nothing but the files tells the reader about the data
    out = mapper(record)
    meta = out["metadata"]
    year_2020 = (1577836800.0, 1609459200.0)
    assert year_2020[0] < float(meta["timestamps"][0]) < year_2020[1]
    assert 30 < float(meta["latlon"][0]) < 45 and -125 < float(meta["latlon"][1]) < -115  # UTM 10N
    assert float(meta["gsd"]) == pytest.approx(10.0)
    assert torch.allclose(meta["wavelengths"], torch.tensor([0.49, 0.56, 0.665, 0.865, 1.61, 2.19]))


def test_quickstart_pixel_stats_match_the_data():
    from d2geo.data.synthetic import synthetic_pixel_stats

    mean, std = synthetic_pixel_stats()
    for name in QUICKSTART:
        cfg = load(name)
        assert cfg.model.pixel_mean == pytest.approx(mean, abs=2e-4)
        assert cfg.model.pixel_std == pytest.approx(std, abs=2e-4)


# -- the family configs on files: d2geo's GeoTIFF reader feeding real-size models ---------------
@pytest.fixture(scope="module")
def geotiff_datasets(tmp_path_factory):
    """Registered GeoTIFF datasets (d2geo's synthetic writer), keyed by frames per sample."""
    from heads_tiny import synthetic_geotiffs

    return synthetic_geotiffs(tmp_path_factory, "cfgtest_geotiff", seed=3)


@pytest.mark.slow
@pytest.mark.parametrize("name, task", [("prithvi/semantic_fpn_eo_v2_300_tl.py", "seg"),
                                        ("dinov2/mask_rcnn_vitb14.py", "det")])
def test_family_config_trains_on_geotiffs(name, task, geotiff_datasets, monkeypatch, tmp_path):
    frames = 4 if "prithvi" in name else None
    prefix = geotiff_datasets[frames or 1]
    cfg = load(name, **{"train.output_dir": str(tmp_path)})
    cfg.model.backbone.net.pretrained = False
    cfg.dataloader.train.dataset.names = f"{prefix}_{task}_train"
    cfg.dataloader.test.dataset.names = f"{prefix}_{task}_val"
    cfg.dataloader.train.total_batch_size = 2
    cfg.dataloader.train.num_workers = 0
    if task == "seg":
        cfg.model.sem_seg_head.num_classes = 4
    batch = next(iter(instantiate(cfg.dataloader.train)))
    bands = len(cfg.model.pixel_mean)
    assert batch[0]["image"].shape == ((bands, frames, 64, 64) if frames else (bands, 64, 64))
    assert batch[0]["metadata"]["timestamps"].shape == ((frames or 1),)
    with cheap_init(monkeypatch):
        model = instantiate(cfg.model)
    model.train()
    with EventStorage():
        losses = model(batch)
    assert losses and all(torch.isfinite(v) for v in losses.values())
    instantiate(cfg.dataloader.evaluator).reset()


LARGER_VARIANTS = {  # config -> (the config it extends, the keys it may change)
    "dinov2/mask_rcnn_vitl14.py": ("dinov2/mask_rcnn_vitb14.py", {
        "model.backbone.net.encoder", "model.backbone.net.drop_path_rate", "optimizer.params.lr_decay_rate",
        "dataloader.train.total_batch_size", "train.output_dir"}),
    "dinov2/semantic_fpn_vitl14.py": ("dinov2/semantic_fpn_vitb14.py", {
        "model.backbone.net.encoder", "model.backbone.net.drop_path_rate", "optimizer.params.lr_decay_rate",
        "dataloader.train.total_batch_size", "train.output_dir", "model.backbone.net.layers"}),
    "prithvi/mask_rcnn_eo_v2_600_tl.py": ("prithvi/mask_rcnn_eo_v2_300_tl.py", {
        "model.backbone.net.encoder", "model.backbone.net.encoder_kwargs.patch_size",
        "optimizer.params.lr_decay_rate", "dataloader.train.total_batch_size", "train.output_dir"}),
    "prithvi/semantic_fpn_eo_v2_600_tl.py": ("prithvi/semantic_fpn_eo_v2_300_tl.py", {
        "model.backbone.net.encoder", "model.backbone.net.encoder_kwargs.patch_size", "model.backbone.net.layers",
        "optimizer.params.lr_decay_rate", "dataloader.train.total_batch_size", "train.output_dir"}),
}


def _flat(node, prefix=""):
    from omegaconf import DictConfig, OmegaConf

    out = {}
    for key in node:
        value = node[key]
        path = f"{prefix}{key}"
        if isinstance(value, DictConfig):
            out.update(_flat(value, path + "."))
        else:
            out[path] = OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
    return out


@pytest.mark.parametrize("name", sorted(LARGER_VARIANTS))
def test_larger_variant_config_overrides_only_what_differs(name):
    """ViTDet's pattern: the larger encoder's config imports the smaller one's and sets only
    the encoder and what goes with it; its encoder's block count fits the taps."""
    from d2geo.encoders import get_encoder_config

    base_name, allowed = LARGER_VARIANTS[name]
    allowed = allowed | {"dataloader.evaluator.output_dir"}  # follows train.output_dir
    big, base = _flat(load(name)), _flat(load(base_name))
    assert set(big) - {"model.backbone.net.encoder_kwargs.patch_size"} <= set(base) | allowed
    changed = {k for k in big if big.get(k) != base.get(k)}
    assert changed and changed <= allowed, changed - allowed
    depth = get_encoder_config(big["model.backbone.net.encoder"])["depth"]
    assert max(big["model.backbone.net.layers"]) < depth


def test_family_configs_take_bands_and_statistics_from_the_pretrained_table():
    from d2geo.encoders import get_pretrained_cfg

    for name in FAMILY_CONFIGS + sorted(LARGER_VARIANTS) + ["detrex_dino/dino_dinov2_vitb14.py"]:
        if name.startswith("detrex"):
            pytest.importorskip("detrex")
        cfg = load(name)
        net = cfg.model.backbone.bottom_up if "bottom_up" in cfg.model.backbone else cfg.model.backbone.net
        pre = get_pretrained_cfg(net.encoder)
        stats = pre.stats_for("sentinel-2-l2a") if net.encoder.startswith("clay") else pre.default_stats
        bands, mean, std = list(stats.bands), list(stats.mean), list(stats.std)
        if net.encoder.startswith("terramind"):  # several modalities: each one's table, in channel order
            from d2geo.encoders.terramind import terramind_stats

            bands = list(net.encoder_kwargs.bands)
            assert bands[:12] == list(stats.bands) and bands[12:] == ["S1RTC:VV", "S1RTC:VH", "DEM:DEM"]
            mean, std = terramind_stats(bands)
            assert mean[12:] == list(pre.stats_for("S1RTC").mean) + list(pre.stats_for("DEM").mean)
        if net.encoder.startswith("croma"):  # joint: the optical table, then the SAR one
            bands = list(net.encoder_kwargs.bands)
            assert bands == [f"S2L1C:{b}" for b in stats.bands] + ["S1GRD:VV", "S1GRD:VH"]
            s1 = pre.stats_for("croma-s1")
            mean, std = mean + list(s1.mean), std + list(s1.std)
        if net.encoder.startswith("galileo"):  # Sentinel-2 groups, then Sentinel-1, under the files' levels
            bands = list(net.encoder_kwargs.bands)
            assert bands == [b.replace("S2:", "S2L1C:") for b in stats.bands] + ["S1GRD:VV", "S1GRD:VH"]
            s1 = pre.stats_for("galileo-s1")
            mean, std = mean + list(s1.mean), std + list(s1.std)
        assert list(cfg.model.pixel_mean) == mean, name
        assert list(cfg.model.pixel_std) == std, name
        assert list(net.encoder_kwargs.bands) == list(cfg.dataloader.train.mapper.bands) == bands
        assert net.pretrained is True and net.weights is None, name
    # ... and no config repeats the numbers: the first mean of every table appears in no file
    from d2geo.encoders import list_encoders

    # (a zero mean, as of weights trained on DN / 10 000, is no number anyone pastes)
    firsts = {repr(s.mean[0]) for n in list_encoders() for s in get_pretrained_cfg(n).stats if s.mean[0] != 0}
    root = model_zoo.config_root()
    for dirpath, _, filenames in os.walk(root):
        for f in filenames:
            if f.endswith(".py"):
                text = open(os.path.join(dirpath, f)).read()
                assert not [v for v in firsts if v in text], os.path.join(dirpath, f)


# -- the encoder fragments: every config that applies one carries exactly its facts ------------
def _applied_fragment(name):
    """The fragment (``common/encoders/<x>.py``) a zoo config imports itself, else None."""
    import ast

    tree = ast.parse(open(model_zoo.get_config_file(name)).read())
    for node in tree.body:
        if (isinstance(node, ast.ImportFrom) and node.level == 2 and (node.module or "").startswith("common.encoders.")
                and [a.name for a in node.names] == ["encoder"]):
            return "common/encoders/" + node.module.split(".")[-1] + ".py"
    return None


def _extends_sibling(name):
    import ast

    tree = ast.parse(open(model_zoo.get_config_file(name)).read())
    return any(isinstance(n, ast.ImportFrom) and n.level == 1 for n in tree.body)


#: one of each way a config applies its fragment: taps, ``net=`` detectron2's FPN, detrex
SAVED_AND_RELOADED = ["dinov2/semantic_fpn_vitb14.py", "satlas/mask_rcnn_swinb.py", "detrex_dino/dino_dinov2_vitb14.py"]


def test_every_family_config_applies_its_encoder_fragment(tmp_path):
    """The backbone arguments, pixel statistics, mapper bands, taps and layer decay of a task
    config are its fragment's (one fact, one place; ``common/encoders/apply.py``), also after
    ``LazyConfig.save`` and a reload. Quickstart configs train tiny encoders from scratch; a
    larger variant extends its sibling."""
    from d2geo.model_zoo import find_backbone_nodes

    def carries(cfg, frag, name):
        ((_, net),) = find_backbone_nodes(cfg.model)
        for key, value in frag.backbone.items():
            assert net[key] == value, (name, key)
        # multi-layer pyramid (semantic FPN / UperNet): the fragment's taps; Panoptic FPN keeps
        # Mask R-CNN's single-tap pyramid
        if "taps" in frag and "sem_seg_head" in cfg.model and "roi_heads" not in cfg.model:
            assert list(net.layers) == list(frag.taps), name
        assert list(cfg.model.pixel_mean) == list(frag.pixel_mean), name
        assert list(cfg.model.pixel_std) == list(frag.pixel_std), name
        assert list(cfg.dataloader.train.mapper.bands) == list(frag.bands), name
        assert list(cfg.dataloader.test.mapper.bands) == list(frag.bands), name
        assert cfg.optimizer.params.lr_decay_rate == frag.lr_decay_rate, name

    applying = [n for n in model_zoo.list_configs() if _applied_fragment(n)]
    assert set(FAMILY_CONFIGS) | set(SAVED_AND_RELOADED) <= set(applying)
    for name in model_zoo.list_configs():
        assert name in applying or name.startswith("quickstart/") or _extends_sibling(name), (
            f"{name} neither applies a common/encoders fragment nor extends a config that does")
    fragments = {}
    for name in applying:
        if name.startswith("detrex") and not _detrex_available():
            continue
        path = model_zoo.get_config_file(_applied_fragment(name))
        if path not in fragments:
            fragments[path] = LazyConfig.load(path, "encoder")
        frag = fragments[path]
        cfg = load(name)
        carries(cfg, frag, name)
        if name in SAVED_AND_RELOADED:
            saved = str(tmp_path / "config.yaml")
            LazyConfig.save(cfg, saved)
            assert not os.path.exists(saved + ".pkl"), name  # plain YAML, no pickle fallback
            carries(LazyConfig.load(saved), frag, name)


def _detrex_available():
    try:
        from d2geo.modeling.detrex import detrex_projects_root

        return detrex_projects_root() is not None
    except ImportError:
        return False


def test_data2vec_config_without_its_hand_downloaded_file_says_how_to_get_it():
    from d2geo.encoders import ManualDownloadError

    cfg = load("ssl4eo/semantic_fpn_vits16_data2vec.py")
    with pytest.raises(ManualDownloadError, match=r"drive\.google\.com/file/d/1YecuYPAxl1NIzLmsmdbUROjCb5g0t80l/view"
                                                  r", which d2geo cannot download .* set model\.backbone\.net\.weights"):
        instantiate(cfg.model)


# -- one family key: config folder, fragment, encoder module, encoder test, encoder-name prefix ---------
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NOT_FAMILIES = {"common", "quickstart", "detrex_dino", "__pycache__"}
#: encoder names that another change renames to their family key; drop an entry once it has
ENCODER_NAMES_BEING_RENAMED = {"scale_mae"}


def test_one_family_key_everywhere():
    """A family is spelled one way: ``configs/<key>/``, ``configs/common/encoders/<key>[_<variant>].py``,
    ``d2geo/encoders/<fragment>.py``, ``tests/encoders/test_<fragment>.py``, encoders ``<key>_*``."""
    import re

    configs = os.path.join(REPO, "configs")
    folders = sorted(d for d in os.listdir(configs) if os.path.isdir(os.path.join(configs, d)) and d not in NOT_FAMILIES)
    fragments = sorted(f[:-3] for f in os.listdir(os.path.join(configs, "common", "encoders"))
                       if f.endswith(".py") and f not in ("apply.py", "__init__.py"))
    assert "dinov2" in folders and "dino_v2" not in folders
    for key in folders:
        assert key in fragments, f"configs/{key}/ has no fragment configs/common/encoders/{key}.py"
    for frag in fragments:
        family = [k for k in folders if frag == k or frag.startswith(k + "_")]
        assert family, f"the fragment {frag}.py names no config folder"
        assert os.path.isfile(os.path.join(REPO, "d2geo", "encoders", f"{frag}.py")), frag
        assert os.path.isfile(os.path.join(REPO, "tests", "encoders", f"test_{frag}.py")), frag
        text = open(os.path.join(configs, "common", "encoders", f"{frag}.py"), encoding="utf-8").read()
        name = re.search(r'^_name = "([^"]+)"', text, re.M).group(1)
        if family[0] not in ENCODER_NAMES_BEING_RENAMED:
            assert name.startswith(family[0] + "_"), (frag, name)
