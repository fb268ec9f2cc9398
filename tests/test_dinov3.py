"""DINOv3 fidelity against timm, from checkpoints in the official DINOv3 layout."""
import pytest
import timm
import torch

from conftest import rel_err
from d2geo.encoders import CheckpointError, build_encoder, get_encoder_config


def _official_dinov3_state_dict(ref: torch.nn.Module) -> dict:
    """Write a timm DINOv3 model's weights under the official DINOv3 names."""
    sd = {}
    D = ref.embed_dim
    for k, v in ref.state_dict().items():
        k = k.replace("gamma_1", "ls1.gamma").replace("gamma_2", "ls2.gamma")
        k = k.replace("reg_token", "storage_tokens")
        sd[k] = v
    for i in range(len(ref.blocks)):
        # the distilled models carry an all-zero qkv bias and its mask
        sd[f"blocks.{i}.attn.qkv.bias"] = torch.zeros(3 * D)
        sd[f"blocks.{i}.attn.qkv.bias_mask"] = torch.zeros(3 * D)
    sd["mask_token"] = torch.zeros(1, D)
    sd["rope_embed.periods"] = torch.rand(D // ref.blocks[0].attn.num_heads // 4)
    return sd


def _pair(name, tmp_path, wrap=None, **kw):
    timm_name = get_encoder_config(name)["timm_name"]
    ref = timm.create_model(timm_name, pretrained=False, num_classes=0, **kw).eval()
    with torch.no_grad():
        for n, p in ref.named_parameters():
            if "gamma" in n or "token" in n:
                p.normal_(0, 0.5)
    sd = _official_dinov3_state_dict(ref)
    path = tmp_path / "dinov3.pth"
    torch.save(wrap(sd) if wrap else sd, path)
    return ref, build_encoder(name, weights=path, **kw).eval()


@pytest.mark.slow
@pytest.mark.parametrize("size", [(224, 224), (160, 288)])
def test_sat_large_matches_timm(size, tmp_path):
    """Real ViT-L/16 (the SAT-493M architecture), random weights, several layers."""
    ref, ours = _pair("dinov3_vitl16_sat", tmp_path)
    assert ours.num_prefix_tokens == 5 and ours.embed_dim == 1024 and ours.depth == 24
    x = torch.randn(1, 3, *size)
    layers = [5, 11, 23]
    with torch.no_grad():
        for norm in (True, False):
            r = ref.forward_intermediates(x, indices=layers, norm=norm, intermediates_only=True)
            o = ours.forward_features(x, layers=layers, norm=norm)
            for a, b in zip(o, r):
                assert a.shape == (1, 1024, size[0] // 16, size[1] // 16)
                assert rel_err(a, b) <= 1e-4


def test_teacher_checkpoint_and_negative_layers(tmp_path):
    """A DINOv3 training checkpoint keeps the weights under teacher.backbone."""
    kw = dict(embed_dim=64, depth=3, num_heads=4)
    wrap = lambda sd: {"teacher": {f"backbone.{k}": v for k, v in sd.items()},  # noqa: E731
                       "student": {f"backbone.{k}": torch.zeros_like(v) for k, v in sd.items()}}
    ref, ours = _pair("dinov3_vits16", tmp_path, wrap=wrap, **kw)
    x = torch.randn(2, 3, 64, 48)
    with torch.no_grad():
        r = ref.forward_intermediates(x, indices=[1, 2], norm=True, intermediates_only=True)
        o = ours.forward_features(x, layers=[-2, -1])
    for a, b in zip(o, r):
        assert rel_err(a, b) <= 1e-4


def test_dinov2_checkpoint_is_refused(tmp_path):
    dinov2 = timm.create_model("vit_small_patch14_dinov2", pretrained=False, embed_dim=64,
                               depth=3, num_heads=4, num_classes=0)
    path = tmp_path / "dinov2.pth"
    torch.save(dinov2.state_dict(), path)
    with pytest.raises(CheckpointError, match="does not fit"):
        build_encoder("dinov3_vits16", weights=path, embed_dim=64, depth=3, num_heads=4)
