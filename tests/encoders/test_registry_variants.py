"""Issue 23's missing published variants of families d2geo already has: DINOv3 ViT-S+/16 and
ViT-H+/16 (timm's ``*_plus_patch16_dinov3_qkvb`` copies) and SSL4EO-S12 ViT-B/16, ViT-L/16,
ViT-H/14 MAE and FG-MAE for Sentinel-2 (torchgeo's ``ViT{Base16,Large16,Huge14}_Weights``).
Tiny-depth builds against the timm architectures the weights were published for."""
from __future__ import annotations

import pytest
import torch

from d2geo.encoders import build_encoder, get_pretrained_cfg
from d2geo.encoders.hub import parse_hf_uri

timm = pytest.importorskip("timm")


@pytest.mark.parametrize("name, timm_name, dim", [
    ("dinov3_vits16plus", "vit_small_plus_patch16_dinov3_qkvb", 384),
    ("dinov3_vith16plus", "vit_huge_plus_patch16_dinov3_qkvb", 1280),
])
def test_dinov3_plus_variants_load_timms_layout_and_match_its_features(name, timm_name, dim):
    cfg = get_pretrained_cfg(name)
    assert cfg.source == f"hf://timm/{timm_name}.lvd1689m/model.safetensors" and cfg.license == "DINOv3 License"
    torch.manual_seed(0)
    ref = timm.create_model(timm_name, pretrained=False, num_classes=0, global_pool="", depth=1, img_size=64,
                            dynamic_img_size=True).eval()
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    ours = build_encoder(name, weights=dict(ref.state_dict()), depth=1, img_size=64).eval()
    assert ours.embed_dim == dim and type(ours.vit.blocks[0].mlp) is type(ref.blocks[0].mlp)  # SwiGLU
    x = torch.randn(1, 3, 64, 48)
    with torch.no_grad():
        tokens = ref.forward_features(x)[:, ref.num_prefix_tokens:]
        (fmap,) = ours.forward_features(x, layers=[0], norm=True)
    assert torch.allclose(fmap.flatten(2).transpose(1, 2), tokens, atol=1e-5)


@pytest.mark.parametrize("arch, timm_name", [("vitb16", "vit_base_patch16_224"), ("vitl16", "vit_large_patch16_224"),
                                             ("vith14", "vit_huge_patch14_224")])
@pytest.mark.parametrize("method", ["mae", "fgmae"])
def test_ssl4eo_larger_variants_are_timms_architecture_at_reduced_depth(arch, timm_name, method):
    name = f"ssl4eo_s12_{arch}_{method}"
    cfg = get_pretrained_cfg(name)
    f = parse_hf_uri(cfg.source)
    assert f.repo_id == ("wangyi111/SSL4EO-S12" if method == "mae" else "wangyi111/FGMAE")
    assert f.filename.startswith(f"B13_{arch}_{method}_ep") and cfg.pinned and cfg.license == "CC-BY-4.0"
    ours = build_encoder(name, depth=1)
    ref = timm.create_model(timm_name, pretrained=False, num_classes=0, global_pool="", in_chans=13, depth=1)
    assert (ours.embed_dim, ours.patch_size) == (ref.embed_dim, ref.patch_embed.patch_size[0])
    assert ours.vit.blocks[0].attn.num_heads == ref.blocks[0].attn.num_heads
    shapes = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    # the published encoder files are timm's layout: a depth-1 copy loads in full
    loaded = build_encoder(name, weights=dict(ref.state_dict()), depth=1)
    assert {k: tuple(v.shape) for k, v in loaded.vit.state_dict().items() if k in shapes} == shapes
    out = loaded.forward_features(torch.zeros(1, 13, 2 * ours.patch_size, 3 * ours.patch_size), layers=[0])
    assert tuple(out[0].shape) == (1, ours.embed_dim, 2, 3)
