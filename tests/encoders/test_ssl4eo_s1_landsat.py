"""SSL4EO-S12 Sentinel-1 MAE / FG-MAE and SSL4EO-L Landsat ViT-S/16 against the models torchgeo builds.

torchgeo 0.8.1's ``vit_{small,base,large}_patch16_224`` / ``vit_huge_patch14_224(weights)`` are
``timm.create_model(<name>, in_chans=weights.meta['in_chans'])`` with a ``strict=False`` load that
tolerates ``norm.*`` / ``head.*`` missing. The reference is built so (tiny widths,
``dynamic_img_size=True`` for other sizes) from random-weight checkpoints in the published timm
layout; the table is checked against the URLs and band lists in torchgeo's wheel itself.
"""
import re
import zipfile

import pytest
import torch

timm = pytest.importorskip("timm")

from helpers import rel_err  # noqa: E402
from d2geo.encoders import BandError, EncoderInputError, build_encoder, describe, get_pretrained_cfg  # noqa: E402
from d2geo.encoders.ssl4eo import SSL4EO_L_STATS, SSL4EO_PRETRAINED, SSL4EO_S1_STATS  # noqa: E402

TOL = 1e-4
KEYS = {"norm.weight", "norm.bias", "head.weight", "head.bias"}
TIMM_NAME = {"vits16": "vit_small_patch16_224", "vitb16": "vit_base_patch16_224",
             "vitl16": "vit_large_patch16_224", "vith14": "vit_huge_patch14_224"}


def _tiny(arch: str) -> dict:
    p = 14 if arch.endswith("14") else 16
    return dict(embed_dim=64, depth=3, num_heads=4, img_size=4 * p)


def _published(arch: str, in_chans: int, with_norm: bool) -> dict:
    torch.manual_seed(0)
    model = timm.create_model(TIMM_NAME[arch], in_chans=in_chans, num_classes=0, **_tiny(arch))
    sd = {}
    with torch.no_grad():
        for k, v in model.state_dict().items():
            if k.startswith("norm.") and not with_norm:
                continue
            sd[k] = v + 0.05 * torch.randn_like(v)
        if with_norm:
            sd["norm.weight"] = 1 + 0.2 * torch.randn_like(sd["norm.weight"])
    return sd


def _reference(arch: str, in_chans: int, sd: dict):
    ref = timm.create_model(TIMM_NAME[arch], in_chans=in_chans, dynamic_img_size=True, **_tiny(arch))
    missing, unexpected = ref.load_state_dict(sd, strict=False)
    assert set(missing) <= KEYS and set(unexpected) <= KEYS
    return ref.eval()


def _compare(enc, ref, x):
    worst = 0.0
    for norm in (False, True):
        with torch.no_grad():
            want = ref.forward_intermediates(x, indices=[0, 1, 2], norm=norm, intermediates_only=True)
            got = enc.forward_features(x, layers=[0, 1, 2], norm=norm)
        for a, b in zip(got, want):
            worst = max(worst, rel_err(a, b))
    assert worst <= TOL, worst
    return worst


@pytest.mark.parametrize("name, arch, with_norm", [
    ("ssl4eo_s12_vits16_mae_s1", "vits16", True), ("ssl4eo_s12_vitb16_fgmae_s1", "vitb16", True),
    ("ssl4eo_s12_vith14_mae_s1", "vith14", True),
    ("ssl4eo_l_vits16_tm_toa_moco", "vits16", False), ("ssl4eo_l_vits16_etm_toa_simclr", "vits16", True),
    ("ssl4eo_l_vits16_oli_tirs_toa_moco", "vits16", False), ("ssl4eo_l_vits16_oli_sr_simclr", "vits16", True)])
def test_published_layout_native_and_other_sizes(name, arch, with_norm, tmp_path):
    n = len(get_pretrained_cfg(name).bands)
    sd = _published(arch, n, with_norm)
    torch.save(sd, tmp_path / "w.pth")
    enc = build_encoder(name, weights=tmp_path / "w.pth", **_tiny(arch)).eval()
    ref = _reference(arch, n, dict(sd))
    p = enc.patch_size
    assert enc.in_chans == n
    _compare(enc, ref, torch.randn(2, n, 4 * p, 4 * p))       # the native grid
    _compare(enc, ref, torch.randn(1, n, 4 * p, 6 * p))       # non-square
    _compare(enc, ref, torch.randn(1, n, 7 * p, 3 * p))


def test_moco_training_checkpoint_of_a_landsat_encoder_loads_its_base_encoder():
    sd = _published("vits16", 7, True)
    wrapped = {f"module.encoder_q.{k}": v for k, v in sd.items()}
    wrapped["module.encoder_q.head.weight"] = torch.randn(128, 64)
    enc = build_encoder("ssl4eo_l_vits16_oli_sr_moco", **_tiny("vits16")).eval()
    from d2geo.encoders import load_encoder_weights

    report = load_encoder_weights(enc, {"state_dict": wrapped})
    assert "module.encoder_q.head.weight" in report.ignored
    _compare(enc, _reference("vits16", 7, sd), torch.randn(1, 7, 64, 96))


def test_landsat_tm_bands_are_read_as_tm_bands_not_oli_ones():
    """TM's B4 is near infrared (OLI's B4 is red): a TM encoder given ["B4", "B3"] or ["nir", "red"]
    takes the kernel columns of TM's B4 and B3, and equals torchgeo's model fed those two bands."""
    sd = _published("vits16", 7, True)
    ref = _reference("vits16", 7, dict(sd))
    by_id = build_encoder("ssl4eo_l_vits16_tm_toa_moco", weights=sd, bands=("B4", "B3"), **_tiny("vits16")).eval()
    by_name = build_encoder("ssl4eo_l_vits16_tm_toa_moco", weights=sd, bands=("nir", "red"), **_tiny("vits16")).eval()
    kernel = sd["patch_embed.proj.weight"]
    assert torch.equal(by_id.vit.patch_embed.proj.weight, kernel[:, [3, 2]])
    assert torch.equal(by_name.vit.patch_embed.proj.weight, kernel[:, [3, 2]])
    x = torch.randn(1, 2, 64, 64)
    full = torch.zeros(1, 7, 64, 64)
    full[:, 3], full[:, 2] = x[:, 0], x[:, 1]
    with torch.no_grad():
        want = ref.forward_intermediates(full, indices=[2], norm=True, intermediates_only=True)[0]
        assert rel_err(by_id.forward_features(x, layers=[2], norm=True)[0], want) <= TOL


def test_surface_reflectance_ids_select_etm_sr_bands():
    sd = _published("vits16", 6, True)
    enc = build_encoder("ssl4eo_l_vits16_etm_sr_moco", weights=sd, bands=("SR_B7", "B4"), **_tiny("vits16"))
    assert torch.equal(enc.vit.patch_embed.proj.weight, sd["patch_embed.proj.weight"][:, [5, 3]])


# -- bad input -----------------------------------------------------------------------------------
def test_etm_thermal_band_named_ambiguously_is_refused_naming_both_gains():
    sd = _published("vits16", 9, True)
    with pytest.raises(BandError, match=r"B6_VCID_1 .*B6_VCID_2"):
        build_encoder("ssl4eo_l_vits16_etm_toa_moco", weights=sd, bands=("B4", "lwir"), **_tiny("vits16"))


def test_sentinel2_stack_into_a_sentinel1_encoder_is_refused():
    enc = build_encoder("ssl4eo_s12_vits16_mae_s1", **_tiny("vits16"))
    with pytest.raises(EncoderInputError, match=r"13 bands but the encoder expects 2"):
        enc.forward_features(torch.randn(1, 13, 64, 64))


# -- the table against torchgeo's own ------------------------------------------------------------
def _torchgeo_sources():
    from testkit.upstream import UpstreamUnavailable, upstream_wheel

    try:
        wheel = upstream_wheel("torchgeo")
    except UpstreamUnavailable as e:
        pytest.skip(str(e))
    with zipfile.ZipFile(wheel) as zf:
        vit = zf.read("torchgeo/models/vit.py").decode()
        resnet = zf.read("torchgeo/models/resnet.py").decode()
    urls = re.findall(r"url='(https://[^']+)'", vit)
    return {re.sub(r"^https://(hf\.co|huggingface\.co)/", "", u).replace("/resolve/", "@") for u in urls}, resnet


def test_sources_are_torchgeos_urls_and_band_lists():
    urls, resnet = _torchgeo_sources()
    new = [n for n in SSL4EO_PRETRAINED if n.endswith("_s1") or n.startswith("ssl4eo_l_")]
    assert len(new) == 8 + 10
    for name in new:
        cfg = SSL4EO_PRETRAINED[name]
        assert cfg.pinned and cfg.revision and cfg.source[len("hf://"):] in urls, name
        if name.startswith("ssl4eo_l_"):  # torchgeo's names end in the first 8 hex digits of the sha256
            assert cfg.source.endswith(f"-{cfg.sha256[:8]}.pth"), name
        else:
            assert cfg.sha256 is None  # no public source gives the B2_*_enc.pth digests
    for split, stats in SSL4EO_L_STATS.items():
        listed = re.search(rf"_landsat_{split}_bands = \[([^\]]*)\]", resnet).group(1)
        assert tuple(re.findall(r"'([^']+)'", listed)) == stats.bands, split
        assert stats.mean == (0.0,) * len(stats.bands) and stats.std == (255.0,) * len(stats.bands)
    s1_mean = re.search(r"_mean_s1 = \[([^\]]*)\]", resnet).group(1)
    s1_std = re.search(r"_std_s1 = \[([^\]]*)\]", resnet).group(1)
    assert SSL4EO_S1_STATS.mean == tuple(float(v) for v in s1_mean.split(","))
    assert SSL4EO_S1_STATS.std == tuple(float(v) for v in s1_std.split(","))
    assert SSL4EO_S1_STATS.units == "dB" and SSL4EO_S1_STATS.bands == ("VV", "VH")


def test_cards_and_statistics_come_from_one_table():
    from d2geo.data.stats import get_stats

    card = str(describe("ssl4eo_l_vits16_oli_tirs_toa_simclr"))
    assert "CC0-1.0" in card and "B10" in card and "1c88bb51b6e17a21dde5230738fa38b74bd74f76" in card
    mean, std = get_stats("ssl4eo_s12_s1")
    assert list(mean) == pytest.approx([-12.59, -20.26]) and list(std) == pytest.approx([5.26, 5.91])
    assert list(get_stats("ssl4eo_l_tm_toa", ["nir"])[1]) == [255.0]
    assert describe("ssl4eo_s12_vith14_fgmae_s1").patch_size == 14


def test_every_ssl4eo_entry_states_the_patch_size_its_variant_is_built_with():
    from d2geo.encoders import get_encoder_config

    for name, cfg in SSL4EO_PRETRAINED.items():  # ViT-H/14 entries said 16 before
        assert cfg.patch_size == get_encoder_config(name)["patch_size"], name
