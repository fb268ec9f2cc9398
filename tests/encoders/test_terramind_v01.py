"""TerraMind 0.1 base (terratorch 1.2.13's ``terramind_v01_base``) against terratorch's TerraMindViT.

The v0.1 file holds the pretraining encoder-decoder with one raw-data encoder embedding
(``untok_sen2l2a@224``; its other inputs were tokenized) and the v1 base architecture. The
reference is terratorch's ``TerraMindViT(modalities=['S2L2A'])`` loading a random-weight state
dict in that layout (tiny widths), as ``build_terrammind_vit(pretrained=True)`` does; the
statistics are compared with the ones in terratorch's wheel.
"""
import ast
import zipfile
from functools import partial

import pytest
import torch

from helpers import rel_err, terratorch_terramind
from d2geo.encoders import build_encoder, describe, get_encoder_config, get_pretrained_cfg, load_encoder_weights
from d2geo.encoders.terramind import TERRAMIND_V01_STATS, terramind_stats

TINY = dict(embed_dim=64, depth=3, num_heads=4)
TOL = 1e-4
#: what terramind_v01_base's pretraining had as encoder inputs (terratorch's tokenizer_dict['v01'])
V01_INPUTS = ("untok_sen2l2a@224", "tok_sen2l2a@224", "tok_sen1grd@224", "tok_dem@224", "tok_lulc@224")


@pytest.fixture(scope="module")
def ref():
    return terratorch_terramind()


def _arch(ref):
    return dict(encoder_depth=TINY["depth"], dim=TINY["embed_dim"], num_heads=TINY["num_heads"], mlp_ratio=4,
                qkv_bias=False, proj_bias=False, mlp_bias=False,
                norm_layer=partial(ref.tm_utils.LayerNorm, eps=1e-6, bias=False), act_layer=torch.nn.SiLU,
                gated_mlp=True)


@pytest.fixture(scope="module")
def published(ref):
    torch.manual_seed(7)
    info = ref.modality_info.MODALITY_INFO
    enc = {k: info[k]["encoder_embedding"](**{**info[k], "image_size": 224}) for k in V01_INPUTS}
    dec = {k: info[k]["decoder_embedding"](**{**info[k], "image_size": 224}) for k in ("tok_sen2l2a@224",)}
    model = ref.terramind.TerraMind(enc, dec, info, decoder_depth=1, **_arch(ref))
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(1 + 0.2 * torch.randn_like(p)) if "norm" in name and name.endswith("weight") else \
                p.add_(0.05 * torch.randn_like(p))
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    assert not any("untok_sen1" in k or "untok_dem" in k for k in sd)
    return sd


def _upstream(ref, sd):
    vit = ref.terramind_vit.TerraMindViT(modalities=["S2L2A"], merge_method="mean", num_register_tokens=0,
                                         **_arch(ref))
    own = vit.state_dict()
    vit.load_state_dict({k: v for k, v in sd.items() if k in own}, strict=True)
    return vit.eval()


@pytest.mark.parametrize("hw", [(224, 224), (96, 160)])
def test_published_v01_layout_matches_terratorch(ref, published, hw):
    vit = _upstream(ref, published)
    ours = build_encoder("terramind_v01_base", **TINY).eval()
    report = load_encoder_weights(ours, published)
    assert any("tok_sen1grd" in k for k in report.ignored)
    x = torch.randn(2, 12, *hw)
    h, w = hw[0] // 16, hw[1] // 16
    raw = []
    hooks = [b.register_forward_hook(lambda m, i, o: raw.append(o.clone())) for b in vit.encoder]
    with torch.no_grad():
        vit({"S2L2A": x})
    for hk in hooks:
        hk.remove()
    for norm in (False, True):
        with torch.no_grad():
            mine = ours.forward_features(x, layers=[0, 1, 2], norm=norm)
        for i, tokens in enumerate(raw):
            t = vit.encoder_norm(tokens) if norm else tokens
            want = t.transpose(1, 2).reshape(2, -1, h, w)
            assert rel_err(mine[i], want) <= TOL, (norm, i)


def test_v01_was_pretrained_on_raw_s2l2a_only(published):
    enc = build_encoder("terramind_v01_base", bands=["S2L2A", "S1GRD"], **TINY)
    from d2geo.encoders import CheckpointError

    with pytest.raises(CheckpointError, match=r"no raw-data embedding of S1GRD: .*raw S2L2A only; drop S1GRD"):
        load_encoder_weights(enc, published)
    with pytest.raises(KeyError, match=r"no S1GRD .*S2L2A"):
        terramind_stats(["S1GRD"], TERRAMIND_V01_STATS)


def test_statistics_architecture_and_card_as_terratorch_registers_them():
    from testkit.upstream import UpstreamUnavailable, upstream_wheel

    try:
        wheel = upstream_wheel("terratorch")
    except UpstreamUnavailable as e:
        pytest.skip(str(e))
    with zipfile.ZipFile(wheel) as zf:
        src = zf.read("terratorch/models/backbones/terramind/model/terramind_register.py").decode()
    tree = ast.parse(src)
    values = {t.id: node.value for node in tree.body if isinstance(node, ast.Assign) for t in node.targets
              if isinstance(t, ast.Name)}
    mean = ast.literal_eval(values["v01_pretraining_mean"])["untok_sen2l2a@224"]
    std = ast.literal_eval(values["v01_pretraining_std"])["untok_sen2l2a@224"]
    weights = ast.literal_eval(values["pretrained_weights"])["terramind_v01_base"]
    cfg = get_pretrained_cfg("terramind_v01_base")
    assert cfg.mean == tuple(mean) and cfg.std == tuple(std) and len(cfg.stats) == 1
    assert terramind_stats(["S2L2A:B04"], TERRAMIND_V01_STATS) == ([mean[3]], [std[3]])
    assert cfg.source == f"hf://{weights['hf_hub_id']}/{weights['hf_hub_filename']}"
    assert not cfg.pinned and cfg.unpinned_reason
    base = get_encoder_config("terramind_v1_base")
    v01 = get_encoder_config("terramind_v01_base")
    assert {k: v01[k] for k in ("embed_dim", "depth", "num_heads", "mlp_ratio")} == \
        {k: base[k] for k in ("embed_dim", "depth", "num_heads", "mlp_ratio")}
    assert "HF_TOKEN" in str(describe("terramind_v01_base"))
