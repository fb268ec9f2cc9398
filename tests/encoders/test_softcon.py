"""SoftCon ViT-S/14 and ViT-B/14 against the model torchgeo 0.8.1 builds.

torchgeo's ``vit_{small,base}_patch14_dinov2(weights)`` is ``timm.create_model(<name>,
in_chans=weights.meta['in_chans'], img_size=224)`` with a ``strict=False`` load that tolerates
``norm.*`` / ``head.*``. The reference is built so at tiny widths (the grid of 4 x 4 patches
standing for 16 x 16), from random-weight checkpoints in the published layout (timm / DINOv2
keys with layer scale); the publisher's own DINOv2 layout (with ``mask_token``) loads too.
torchgeo's model takes its native size only; at other sizes the reference is the official DINOv2
ViT the publisher's code copies (its stored outputs, tests/fixtures/dinov2_official_tiny.pt).
"""
import re
import zipfile

import pytest
import torch

timm = pytest.importorskip("timm")

from helpers import rel_err  # noqa: E402
from d2geo.encoders import CheckpointError, build_encoder, describe, get_pretrained_cfg  # noqa: E402
from d2geo.encoders.softcon import SOFTCON_PRETRAINED, SOFTCON_S2_STATS  # noqa: E402
from d2geo.encoders.ssl4eo import S2_L1C_BANDS  # noqa: E402

TOL = 1e-4
TINY = dict(embed_dim=64, depth=3, num_heads=4, img_size=56)
KEYS = {"norm.weight", "norm.bias", "head.weight", "head.bias"}
TIMM = {"vits14": "vit_small_patch14_dinov2", "vitb14": "vit_base_patch14_dinov2"}


def _published(arch: str, in_chans: int) -> dict:
    torch.manual_seed(3)
    model = timm.create_model(TIMM[arch], in_chans=in_chans, num_classes=0, **TINY)
    with torch.no_grad():
        sd = {k: v + 0.05 * torch.randn_like(v) for k, v in model.state_dict().items()}
        sd["norm.weight"] = 1 + 0.2 * torch.randn_like(sd["norm.weight"])
        for k in [k for k in sd if k.endswith(("ls1.gamma", "ls2.gamma"))]:
            sd[k] = 0.1 + 0.5 * torch.rand_like(sd[k])  # trained layer scales, far from 1e-5
    assert any(k.endswith("ls1.gamma") for k in sd)
    return sd


def _reference(arch: str, in_chans: int, sd: dict):
    ref = timm.create_model(TIMM[arch], in_chans=in_chans, **TINY)  # as torchgeo: no dynamic size
    missing, unexpected = ref.load_state_dict(sd, strict=False)
    assert set(missing) <= KEYS and set(unexpected) <= KEYS
    return ref.eval()


@pytest.mark.parametrize("name", sorted(SOFTCON_PRETRAINED))
def test_published_layout_at_the_native_size(name, tmp_path):
    arch = name.split("_")[1]
    n = len(get_pretrained_cfg(name).bands)
    sd = _published(arch, n)
    torch.save(sd, tmp_path / "w.pth")
    ref = _reference(arch, n, dict(sd))
    enc = build_encoder(name, weights=tmp_path / "w.pth", **TINY).eval()
    x = torch.randn(2, n, 56, 56)
    worst = 0.0
    for norm in (False, True):
        with torch.no_grad():
            want = ref.forward_intermediates(x, indices=[0, 1, 2], norm=norm, intermediates_only=True)
            got = enc.forward_features(x, layers=[0, 1, 2], norm=norm)
        worst = max([worst] + [rel_err(a, b) for a, b in zip(got, want)])
    assert worst <= TOL, worst
    with pytest.raises(Exception):  # torchgeo's model itself refuses other sizes
        ref.forward_features(torch.randn(1, n, 56, 84))
    assert enc.forward_features(torch.randn(1, n, 56, 84), layers=[2])[0].shape[-2:] == (4, 6)


def test_the_publishers_dinov2_layout_with_mask_token_loads_the_same(tmp_path):
    sd = _published("vits14", 2)
    official = {**sd, "mask_token": torch.zeros(1, 64)}
    a = build_encoder("softcon_vits14_s1", weights=sd, **TINY).eval()
    b = build_encoder("softcon_vits14_s1", weights={"teacher": {f"backbone.{k}": v for k, v in official.items()}},
                      **TINY).eval()
    x = torch.randn(1, 2, 56, 56)
    with torch.no_grad():
        assert torch.equal(a.forward_features(x, layers=[2])[0], b.forward_features(x, layers=[2])[0])


def test_band_subset_by_name_equals_zero_filled_full_input():
    sd = _published("vits14", 13)
    ref = _reference("vits14", 13, dict(sd))
    picked = ("red", "green", "blue", "B8A")
    enc = build_encoder("softcon_vits14_s2", weights=sd, bands=picked, **TINY).eval()
    x = torch.randn(1, 4, 56, 56)
    full = torch.zeros(1, 13, 56, 56)
    for j, i in enumerate((3, 2, 1, 8)):
        full[:, i] = x[:, j]
    with torch.no_grad():
        want = ref.forward_intermediates(full, indices=[2], norm=True, intermediates_only=True)[0]
        assert rel_err(enc.forward_features(x, layers=[2], norm=True)[0], want) <= TOL


def test_a_sentinel1_file_into_a_sentinel2_variant_is_refused_with_the_fix():
    sd = _published("vits14", 2)
    with pytest.raises(CheckpointError, match=r"softcon_\*_s1"):
        build_encoder("softcon_vits14_s2", weights=sd, **TINY)


def test_table_against_torchgeos_weights_and_statistics():
    from testkit.upstream import UpstreamUnavailable, upstream_wheel

    try:
        wheel = upstream_wheel("torchgeo")
    except UpstreamUnavailable as e:
        pytest.skip(str(e))
    with zipfile.ZipFile(wheel) as zf:
        vit = zf.read("torchgeo/models/vit.py").decode()
        resnet = zf.read("torchgeo/models/resnet.py").decode()
    urls = {u.replace("https://huggingface.co/", "").replace("/resolve/", "@")
            for u in re.findall(r"url='(https://[^']+softcon[^']+)'", vit)}
    assert {c.source[len("hf://"):] for c in SOFTCON_PRETRAINED.values()} == urls
    for key, mine in (("_mean_s2", SOFTCON_S2_STATS.mean), ("_std_s2", SOFTCON_S2_STATS.std)):
        listed = re.search(rf"{key} = \[([^\]]*)\]", resnet).group(1)
        assert tuple(float(v) for v in listed.replace("\n", "").split(",") if v.strip()) == mine
    assert SOFTCON_S2_STATS.bands == S2_L1C_BANDS and SOFTCON_S2_STATS.units == "dn"
    card = describe("softcon_vitb14_s2")
    assert card.family == "softcon" and card.patch_size == 14 and card.config["img_size"] == 224
    assert build_encoder("softcon_vitb14_s2", depth=1).vit.blocks[0].ls1.gamma.shape == (768,)


def test_other_sizes_follow_the_publishers_dinov2_code():
    """Off the native grid SoftCon's code (a copy of facebookresearch/dinov2's ViT) resizes the
    position table its own way (0.1 offset, no antialiasing); torchgeo's model refuses those sizes.
    The outputs of the official DINOv2 ViT without registers, stored by
    tests/fixtures/make_dinov2_fixture.py (at square and non-square sizes off its 7 x 7 grid), are
    reproduced by a SoftCon encoder given those weights."""
    import os

    data = torch.load(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures",
                                   "dinov2_official_tiny.pt"), weights_only=True)
    cfg = data["config"]
    rgb = ("red", "green", "blue")
    enc = build_encoder("softcon_vits14_s2", weights=data["plain"]["state_dict"], bands=rgb, pretrained_bands=rgb,
                        embed_dim=cfg["embed_dim"], depth=cfg["depth"], num_heads=cfg["num_heads"],
                        img_size=cfg["img_size"]).eval()
    sizes = set()
    for x, case in zip(data["inputs"], data["plain"]["cases"]):
        sizes.add(tuple(x.shape[-2:]))
        with torch.no_grad():
            for norm, ref in ((True, case["norm"]), (False, case["prenorm"])):
                for o, r in zip(enc.forward_features(x, layers=[0, 1, 2], norm=norm), ref):
                    assert rel_err(o, r) <= TOL, (tuple(x.shape), norm)
    assert any(h != w for h, w in sizes) and any(h != cfg["img_size"] for h, _ in sizes)
