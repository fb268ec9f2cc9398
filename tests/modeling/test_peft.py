"""LoRA (Hugging Face peft) on d2geo encoders: adapters on the forward path of every family,
original weights bit-identical after training, < 5% of the backbone trains, merged == unmerged,
lr decay, plain checkpoints load, and the converter merges a trained model."""
from __future__ import annotations

import copy
import os

import pytest
import torch

pytest.importorskip("detectron2", reason="detectron2 is not installed: see README for installing it from source")
pytest.importorskip("peft", reason="peft is not installed: pip install 'd2geo[peft]'")

from detectron2.checkpoint import DetectionCheckpointer  # noqa: E402
from detectron2.config import LazyConfig, instantiate  # noqa: E402

from d2geo.modeling import GeoBackbone  # noqa: E402
from d2geo.modeling.lr_decay import lr_decay_factor_func  # noqa: E402
from d2geo.modeling.peft_adapters import has_peft, peft_modules  # noqa: E402

#: the families' tiny test variants and how the tests use them
FAMILIES = {
    "dinov2_test": dict(patch_size=16, img_size=32),
    "dinov3_test": dict(img_size=32),
    "prithvi_test": dict(img_size=32, num_frames=2),
    "clay_test": dict(sensor="hls", bands=["blue", "green", "red", "nir_narrow"]),
}
LORA = dict(method="lora", r=4, lora_alpha=8)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _input(bb: GeoBackbone, size: int = 32) -> torch.Tensor:
    enc = bb.encoder
    if enc.input_ndim == 3:
        return torch.randn(2, enc.in_chans, enc.num_frames, size, size)
    return torch.randn(2, enc.in_chans, size, size)


def _metadata(bb: GeoBackbone):
    if "clay" in type(bb.encoder).__name__.lower():
        return {"gsd": 10.0, "timestamps": torch.tensor([[1.6e9], [1.61e9]], dtype=torch.float64),
                "latlon": torch.tensor([[47.0, 8.0], [10.0, 20.0]])}
    return None


@pytest.mark.parametrize("name", list(FAMILIES))
def test_lora_every_family(name):
    torch.manual_seed(0)
    plain = GeoBackbone(name, layers=(1, 3), encoder_kwargs=FAMILIES[name])
    with torch.no_grad():  # DINO's layer scales start at 1e-5 and would hide the blocks' updates
        for n, p in plain.encoder.named_parameters():
            if n.rsplit(".", 1)[-1] in ("gamma", "gamma_1", "gamma_2"):
                p.fill_(1.0)
    lora = GeoBackbone(copy.deepcopy(plain.encoder), layers=(1, 3), peft=LORA)
    adapted = lora.peft_adapted
    assert len(adapted) == 8 and all(n.endswith(("attn.qkv", "attn.proj")) for n in adapted)
    # only adapters and norms train; under 5% of the backbone
    for n, p in lora.encoder.named_parameters():
        assert p.requires_grad == (".lora_" in n or "norm" in n), n
    n_train = sum(p.numel() for p in lora.parameters() if p.requires_grad)
    assert 0 < n_train < 0.05 * sum(p.numel() for p in lora.parameters())
    x, md = _input(plain), _metadata(plain)
    plain.eval(), lora.eval()
    with plain.use_metadata(md), lora.use_metadata(md):
        ref = plain(x)
        same = lora(x)  # B starts at zero: the adapted model is the pretrained one
        for k in ref:
            torch.testing.assert_close(same[k], ref[k], rtol=0, atol=0)
        with torch.no_grad():  # the fused qkv's adapter alone is on the forward path (DINOv3's
            for n, layer in peft_modules(lora.encoder):  # timm attention would bypass it)
                if n.endswith("qkv"):
                    layer.lora_B["default"].weight.normal_(0, 0.1)
        qkv_only = lora(x)
        assert all((qkv_only[k] - ref[k]).abs().max() > 1e-3 for k in ref)
        with torch.no_grad():
            for _, layer in peft_modules(lora.encoder):
                layer.lora_B["default"].weight.normal_(0, 0.1)
        moved = lora(x)  # the adapters are on the forward path of this family's attention
        assert all((moved[k] - ref[k]).abs().max() > 1e-3 for k in ref)
        # the fused qkv's update reaches q, k and v alike
        qkv = next(layer for n, layer in peft_modules(lora.encoder) if n.endswith("qkv"))
        delta = qkv.get_delta_weight("default")
        assert all(part.abs().sum() > 0 for part in delta.chunk(3, dim=0))
        merged = copy.deepcopy(lora)
        assert merged.merge_peft() == 8 and not has_peft(merged)
        out = merged(x)
        for k in ref:
            torch.testing.assert_close(out[k], moved[k], rtol=1e-5, atol=1e-5)
    # merged keys are the plain (upstream) keys again
    assert set(merged.state_dict()) == set(plain.state_dict())


def test_lora_bad_inputs():
    kw = FAMILIES["dinov2_test"]
    with pytest.raises(ValueError, match="freeze"):
        GeoBackbone("dinov2_test", encoder_kwargs=kw, peft=LORA, freeze=2)
    with pytest.raises(ValueError, match="name no Linear"):
        GeoBackbone("dinov2_test", encoder_kwargs=kw, peft={**LORA, "target_modules": ["q_proj"]})
    with pytest.raises(ValueError, match="unknown to peft"):
        GeoBackbone("dinov2_test", encoder_kwargs=kw, peft={"method": "lorax"})
    with pytest.raises(TypeError, match="LoraConfig"):
        GeoBackbone("dinov2_test", encoder_kwargs=kw, peft="lora")
    # short names stay inside the blocks: Clay's wavelength generator has an fc1 too
    clay = GeoBackbone("clay_test", encoder_kwargs=FAMILIES["clay_test"],
                       peft={**LORA, "target_modules": ["fc1"]})
    assert clay.peft_adapted and all(n.startswith("blocks.") for n in clay.peft_adapted)


def test_lora_lr_decay_and_plain_checkpoint(tmp_path):
    kw = FAMILIES["dinov2_test"]
    torch.manual_seed(0)
    plain = GeoBackbone("dinov2_test", encoder_kwargs=kw)
    model = torch.nn.Module()
    model.backbone = torch.nn.Module()
    model.backbone.net = GeoBackbone("dinov2_test", encoder_kwargs=kw, peft=LORA)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    a = "backbone.net.encoder.vit.blocks.2.attn.qkv.lora_A.default.weight"
    assert a in names
    factor = lr_decay_factor_func(model, 0.5)  # the adapters sit in their block's layer
    assert factor(a) == factor("backbone.net.encoder.vit.blocks.2.attn.qkv.lora_B.default.weight") == 0.5 ** 2
    assert factor("backbone.net.encoder.vit.blocks.0.attn.proj.lora_A.default.weight") == 0.5 ** 4
    # a plain checkpoint (upstream conversion, zoo file) loads into the adapted model's base layers
    path = tmp_path / "plain.pth"
    torch.save({"model": {f"backbone.net.{k}": v for k, v in plain.state_dict().items()},
                "matching_heuristics": False}, path)
    incompatible = DetectionCheckpointer(model).load(str(path))
    assert incompatible is not None
    base = model.backbone.net.encoder.vit.blocks[2].attn.qkv.base_layer.weight
    assert torch.equal(base, plain.encoder.vit.blocks[2].attn.qkv.weight)
    sd = model.backbone.net.state_dict()
    assert not [k for k in sd if k not in plain.state_dict() and ".base_layer." not in k and ".lora_" not in k]


# -- training in the packaged configs -----------------------------------------------------------
@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    from heads_tiny import synthetic_geotiffs

    return synthetic_geotiffs(tmp_path_factory, "peft")


@pytest.mark.parametrize("name", ["dinov2/semantic_fpn_vitb14.py", "prithvi/upernet_eo_v2_300_tl.py"])
def test_lora_trains_and_keeps_original_weights(name, synthetic, tmp_path):
    from heads_tiny import falling, tiny_config, train_steps

    cfg = tiny_config(name, synthetic, tmp_path)
    cfg.model.backbone.net.peft = dict(LORA)
    model = instantiate(cfg.model)
    enc = model.backbone.net.encoder
    before = {n: p.detach().clone() for n, p in enc.named_parameters() if not p.requires_grad}
    norms = {n: p.detach().clone() for n, p in enc.named_parameters() if p.requires_grad and "norm" in n}
    assert before and norms
    model, totals = train_steps(cfg, steps=14, lr=3e-3, model=model)
    assert falling(totals), totals
    after = dict(enc.named_parameters())
    for n, p in before.items():  # every original encoder weight, bit for bit
        assert torch.equal(after[n], p), n
    assert any(not torch.equal(after[n], p) for n, p in norms.items())
    assert any(after[n].abs().sum() > 0 for n in after if ".lora_B." in n)

    # the converter merges the trained model into a plain zoo file that needs no peft
    ckpt = tmp_path / "model_final.pth"
    torch.save({"model": model.state_dict()}, ckpt)
    from d2geo.cli import convert as convert_checkpoint
    model.eval()
    batch = [dict(d) for d in next(iter(instantiate(cfg.dataloader.train)))]
    with torch.no_grad():
        want = model(batch)[0]["sem_seg"]
    cfg_file = tmp_path / "cfg.yaml"
    cfg.optimizer.params.model = None
    LazyConfig.save(cfg, str(cfg_file))
    out = convert_checkpoint.merge_peft_checkpoint(str(ckpt), config_file=str(cfg_file), output_dir=str(tmp_path),
                                                   name="merged")
    plain_ckpt = tmp_path / "plain.pth"
    torch.save({"model": {k: v for k, v in model.state_dict().items() if ".lora_" not in k}}, plain_ckpt)
    with pytest.raises(convert_checkpoint.ConversionError, match="no LoRA adapter weights"):
        convert_checkpoint.merge_peft_checkpoint(str(plain_ckpt), config_file=str(cfg_file),
                                                 output_dir=str(tmp_path), name="bad")
    cli = convert_checkpoint.main([str(ckpt), "--merge-peft", "--config-file", str(cfg_file),
                                   "--output-dir", str(tmp_path / "cli")])
    assert os.path.basename(cli).startswith("cfg_merged-")
    zoo = torch.load(out, weights_only=True)
    assert not [k for k in zoo["model"] if "lora_" in k or "base_layer" in k]
    cfg.model.backbone.net.peft = None
    plain = instantiate(cfg.model)
    DetectionCheckpointer(plain).load(out)
    plain.eval()
    with torch.no_grad():
        got = plain(batch)[0]["sem_seg"]
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
