"""Satlas Swin-V2 fidelity against torchgeo's ``swin_v2_b`` (torchgeo/models/swin.py, loaded
from the torchgeo 0.8.1 wheel), and the hierarchical path through GeoBackbone into
detectron2's FPN.

torchgeo's ``swin_v2_b(weights)`` builds ``torchvision.models.swin_v2_b``, replaces its first
convolution by one of ``weights.meta['in_chans']`` bands and loads the state dict
(``strict=False`` asserting nothing missing or unexpected). The test runs that function
itself, with torchvision's builder swapped for the same Swin-V2 at tiny widths and a
weights object holding a random torchvision-layout state dict. The stage taps are the
outputs of ``features[1], [3], [5], [7]``, as terratorch's ``SwinEncoderWrapper`` takes them
(``out_indices=(1, 3, 5, 7)``) and Satlas's FPN uses.
"""
import types

import pytest
import torch
from torchvision.models.swin_transformer import PatchMergingV2, SwinTransformer, SwinTransformerBlockV2

from helpers import load_upstream_module, rel_err
from d2geo.encoders import CheckpointError, EncoderInputError, build_encoder
from d2geo.encoders.satlas import SATLAS_PRETRAINED, SATLAS_STATS

TINY = dict(embed_dim=16, depths=(1, 1, 2, 1), num_heads=(2, 2, 4, 4))
TOL = 1e-4


def _tiny_swin_v2(weights=None, **kwargs):
    assert weights is None
    return SwinTransformer(patch_size=[4, 4], embed_dim=16, depths=[1, 1, 2, 1], num_heads=[2, 2, 4, 4],
                           window_size=[8, 8], stochastic_depth_prob=0.0, block=SwinTransformerBlockV2,
                           downsample_layer=PatchMergingV2, **kwargs)


@pytest.fixture(scope="module")
def tg():
    mod = load_upstream_module("torchgeo", "torchgeo/models/swin.py", "_ref_torchgeo_swin")
    assert mod._satlas_sentinel2_bands == SATLAS_STATS["sentinel2_ms"].bands  # our table = torchgeo's
    return mod


class _Weights:
    """What torchgeo's swin_v2_b reads of a weights enum member."""

    def __init__(self, sd, in_chans):
        self.meta = {"in_chans": in_chans}
        self._sd = sd

    def get_state_dict(self, progress=True):
        return dict(self._sd)


def _published(in_chans=9):
    model = _tiny_swin_v2()
    model.features[0][0] = torch.nn.Conv2d(in_chans, 16, kernel_size=4, stride=4)
    with torch.no_grad():
        sd = {k: v + 0.05 * torch.randn_like(v) if v.is_floating_point() else v
              for k, v in model.state_dict().items()}
        sd["norm.weight"] = 1 + 0.2 * torch.randn_like(sd["norm.weight"])
    assert "head.weight" in sd and "features.0.0.weight" in sd
    return sd


def _upstream(tg, sd, in_chans=9):
    tg.torchvision = types.SimpleNamespace(models=types.SimpleNamespace(swin_v2_b=_tiny_swin_v2))
    return tg.swin_v2_b(_Weights(sd, in_chans)).eval()


def _taps(model, x, norm):
    outs, h = [], x
    with torch.no_grad():
        for i, layer in enumerate(model.features):
            h = layer(h)
            if i in (1, 3, 5, 7):
                outs.append(h)
    if norm:
        outs[-1] = model.norm(outs[-1])
    return [o.permute(0, 3, 1, 2) for o in outs]


@pytest.fixture(scope="module")
def published():
    torch.manual_seed(3)
    return _published()


def test_stage_taps_native_and_non_square_sizes(tg, published, tmp_path):
    path = tmp_path / "sentinel2_swinb_si_ms.pth"
    torch.save(published, path)
    ref = _upstream(tg, published)
    enc = build_encoder("satlas_swinb_sentinel2_si_ms", weights=path, **TINY).eval()
    assert enc.out_strides == (4, 8, 16, 32) and enc.out_channels == (16, 32, 64, 128)
    for shape in ((2, 9, 256, 256), (1, 9, 96, 160), (2, 9, 64, 32)):
        x = torch.randn(shape)
        for norm in (False, True):
            with torch.no_grad():
                got = enc.forward_features(x, layers=[0, 1, 2, 3], norm=norm)
            for i, (a, b) in enumerate(zip(got, _taps(ref, x, norm))):
                assert a.shape == (shape[0], 16 * 2**i, shape[2] // 4 // 2**i, shape[3] // 4 // 2**i)
                assert rel_err(a, b) <= TOL, (shape, norm, i)


def test_band_selection_through_the_vocabulary(tg, published):
    ref = _upstream(tg, published)
    enc = build_encoder("satlas_swinb_sentinel2_si_ms", weights=published, bands=("red", "green", "blue", "B11"),
                        **TINY).eval()
    x = torch.randn(1, 4, 64, 64)
    full = torch.zeros(1, 9, 64, 64)
    for j, b in enumerate(("B04", "B03", "B02", "B11")):
        full[:, SATLAS_STATS["sentinel2_ms"].bands.index(b)] = x[:, j]
    with torch.no_grad():
        got = enc.forward_features(x, layers=[1, 3], norm=True)
    want = _taps(ref, full, True)
    assert rel_err(got[0], want[1]) <= TOL and rel_err(got[1], want[3]) <= TOL


def test_head_is_named_as_left_out(published):
    from d2geo.encoders import load_encoder_weights

    enc = build_encoder("satlas_swinb_sentinel2_si_ms", **TINY)
    report = load_encoder_weights(enc, {"state_dict": {f"backbone.{k}": v for k, v in published.items()}})
    assert set(report.ignored) == {"backbone.head.weight", "backbone.head.bias"}


# -- the recorded (export) path ---------------------------------------------------------------
@pytest.mark.parametrize("shift", [0, 4])
def test_traceable_window_attention_equals_torchvision(shift):
    """The attention the encoder runs while it is recorded equals torchvision's at sizes with
    one and several windows per axis, padded and unpadded, square and not, shifted or not
    (torchvision does not shift an axis that is one window)."""
    from torchvision.models.swin_transformer import ShiftedWindowAttentionV2

    from d2geo.encoders.satlas import window_attention_v2

    torch.manual_seed(0)
    attn = ShiftedWindowAttentionV2(32, [8, 8], [shift, shift], num_heads=4).eval()
    with torch.no_grad():
        for p in attn.parameters():
            p.add_(0.1 * torch.randn_like(p))
        for H, W in [(8, 8), (16, 8), (8, 24), (12, 20), (3, 5), (32, 40), (9, 17)]:
            x = torch.randn(2, H, W, 32)
            assert rel_err(window_attention_v2(attn, x), attn(x)) <= 1e-6, (shift, H, W)


def test_encoder_on_the_recorded_path_equals_upstream(tg, published, monkeypatch):
    """The whole encoder with the recorded-model attention (as under torch.export) against
    torchgeo's swin at native and non-square sizes, every stage."""
    import d2geo.encoders.satlas as satlas

    ref = _upstream(tg, published)
    enc = build_encoder("satlas_swinb_sentinel2_si_ms", weights=published, **TINY).eval()
    monkeypatch.setattr(satlas, "is_tracing", lambda: True)
    for shape in ((1, 9, 256, 256), (1, 9, 96, 160), (1, 9, 64, 32)):
        x = torch.randn(shape)
        with torch.no_grad():
            got = enc.forward_features(x, layers=[0, 1, 2, 3], norm=True)
        for i, (a, b) in enumerate(zip(got, _taps(ref, x, True))):
            assert rel_err(a, b) <= TOL, (shape, i)


# -- the hierarchical path into detectron2 ---------------------------------------------------
def test_geobackbone_gives_res2_to_res5_for_detectron2_fpn(published):
    pytest.importorskip("detectron2")
    from detectron2.modeling.backbone.fpn import FPN, LastLevelMaxPool
    from detectron2.structures import ImageList

    from d2geo.modeling import GeoBackbone

    bb = GeoBackbone("satlas_swinb_sentinel2_si_ms", weights=published, layers=(0, 1, 2, 3), norm=False,
                     encoder_kwargs=TINY)
    shapes = bb.output_shape()
    assert {n: (s.channels, s.stride) for n, s in shapes.items()} == {
        "res2": (16, 4), "res3": (32, 8), "res4": (64, 16), "res5": (128, 32)}
    assert bb.size_divisibility == 32 and bb.padding_constraints == {"size_divisibility": 32}
    fpn = FPN(bottom_up=bb, in_features=list(shapes), out_channels=24, top_block=LastLevelMaxPool())
    images = ImageList.from_tensors([torch.randn(9, 70, 100)], fpn.size_divisibility,
                                    padding_constraints=bb.padding_constraints)
    assert tuple(images.tensor.shape[-2:]) == (96, 128)
    feats = fpn(images.tensor)
    assert {k: tuple(v.shape[-2:]) for k, v in feats.items()} == {
        "p2": (24, 32), "p3": (12, 16), "p4": (6, 8), "p5": (3, 4), "p6": (2, 2)}
    with torch.no_grad():  # the raw stage outputs reach the FPN unchanged
        direct = bb.encoder.forward_features(images.tensor, layers=[0, 1, 2, 3], norm=False)
        assert all(torch.equal(a, b) for a, b in zip(bb(images.tensor).values(), direct))


def test_freeze_and_layer_ids_follow_the_stages():
    pytest.importorskip("detectron2")
    from d2geo.modeling import GeoBackbone

    bb = GeoBackbone("satlas_swinb_sentinel2_si_ms", layers=(0, 1, 2, 3), freeze=2, encoder_kwargs=TINY)
    enc = bb.encoder
    frozen = {n for n, p in enc.named_parameters() if not p.requires_grad}
    assert any(n.startswith("features.0.") for n in frozen)  # the patch embedding
    assert all(n.split(".")[1] in "0123" for n in frozen)  # stage 0 and merging + stage 1
    assert not any(n.startswith(("features.4.", "features.5.", "norm.")) for n in frozen)
    ids = enc.param_layer_ids()
    assert ids["features.0.0.weight"] == 0 and ids["features.1.0.mlp.0.weight"] == 1
    assert ids["features.2.reduction.weight"] == 2 and ids["features.7.0.mlp.0.weight"] == 4
    assert ids["norm.weight"] == 5
    assert "features.1.0.attn.logit_scale" in enc.no_weight_decay()


# -- bad input ---------------------------------------------------------------------------
def test_input_not_a_multiple_of_32_is_refused_with_the_fix():
    enc = build_encoder("satlas_swinb_sentinel2_si_ms", **TINY)
    with pytest.raises(EncoderInputError, match=r"48x64 is not a multiple of 32.*pad"):
        enc.forward_features(torch.randn(1, 9, 48, 64))


def test_vit_options_are_refused_for_swin():
    pytest.importorskip("detectron2")
    from d2geo.modeling import GeoBackbone, MultiLayerPyramid

    with pytest.raises(EncoderInputError, match="window_size is for the ViT families"):
        GeoBackbone("satlas_swinb_sentinel2_si_ms", layers=(0, 1, 2, 3), window_size=4, encoder_kwargs=TINY)
    bb = GeoBackbone("satlas_swinb_sentinel2_si_ms", layers=(0, 1, 2, 3), encoder_kwargs=TINY)
    with pytest.raises(ValueError, match="already hierarchical.*FPN"):
        MultiLayerPyramid(bb)


def test_checkpoint_of_other_bands_is_refused_with_the_fix(published):
    sd = dict(published)
    sd["features.0.0.weight"] = sd["features.0.0.weight"][:, :3]  # an RGB file for the 9-band variant
    with pytest.raises(CheckpointError, match="pretrained_bands"):
        build_encoder("satlas_swinb_sentinel2_si_ms", weights=sd, **TINY)


def test_pretrained_table_names_torchgeo_files(tg):
    urls = {w.url.rsplit("/", 1)[1] for enum in (tg.Swin_V2_B_Weights, tg.Swin_V2_T_Weights) for w in enum}
    for name, (file, _, _) in SATLAS_PRETRAINED.items():
        assert file in urls, name


@pytest.mark.slow
def test_published_size_builds():
    enc = build_encoder("satlas_swinb_sentinel2_si_ms")
    assert enc.out_channels == (128, 256, 512, 1024) and sum(p.numel() for p in enc.parameters()) > 80e6
    out = enc.forward_features(torch.zeros(1, 9, 128, 96), layers=[0, 3])
    assert [tuple(o.shape) for o in out] == [(1, 128, 32, 24), (1, 1024, 4, 3)]


# -- Landsat -----------------------------------------------------------------------------------
def test_landsat_entries_are_torchgeos_weights_with_their_normalisation(tg):
    """``satlas_swinb_landsat_{si,mi}``: torchgeo's LANDSAT_*_SATLAS files, its eleven bands
    B01..B11 (= Landsat B1..B11, in order) and its transform's (x - 4000) / 16320."""
    from d2geo.encoders import get_pretrained_cfg

    for ours, theirs in (("satlas_swinb_landsat_si", "LANDSAT_SI_SATLAS"), ("satlas_swinb_landsat_mi", "LANDSAT_MI_SATLAS")):
        w = tg.Swin_V2_B_Weights[theirs]
        cfg = get_pretrained_cfg(ours)
        assert cfg.source.rsplit("/", 1)[1] == w.url.rsplit("/", 1)[1] == SATLAS_PRETRAINED[ours][0]
        stats = cfg.stats[0]
        assert w.meta["in_chans"] == len(stats.bands) == 11 and stats.sensor == "landsat-c2-l1"
        assert [int(b[1:]) for b in stats.bands] == [int(b[1:]) for b in w.meta["bands"]] == list(range(1, 12))
        norm = [m for m in w.transforms.modules() if type(m).__name__ == "Normalize"][0]
        assert stats.mean == tuple(float(v) for v in norm.mean) * 11
        assert stats.std == tuple(float(v) for v in norm.std) * 11


@pytest.fixture(scope="module")
def landsat_published():
    torch.manual_seed(5)
    return _published(in_chans=11)


def test_landsat_entry_loads_the_published_layout_and_equals_torchgeo(tg, landsat_published):
    ref = _upstream(tg, landsat_published, in_chans=11)
    enc = build_encoder("satlas_swinb_landsat_si", weights=landsat_published, **TINY).eval()
    x = torch.randn(1, 11, 64, 96)
    with torch.no_grad():
        got = enc.forward_features(x, layers=[0, 1, 2, 3], norm=True)
    for a, b in zip(got, _taps(ref, x, True)):
        assert rel_err(a, b) <= TOL


def test_landsat_band_selection_by_name(tg, landsat_published):
    """Landsat ids on the Landsat entry are Landsat's (B10 thermal), asset and common names
    too; Sentinel-2 names given with their sensor find the same physical bands."""
    ref = _upstream(tg, landsat_published, in_chans=11)
    cases = [
        (dict(bands=("B4", "B3", "B2", "B10")), (3, 2, 1, 9)),
        (dict(bands=("SR_B5", "ST_B10", "pan", "lwir12")), (4, 9, 7, 10)),
        (dict(bands=("B04", "B8A", "B10", "B11"), sensor="sentinel-2-l1c"), (3, 4, 8, 5)),  # cirrus, swir16
    ]
    x = torch.randn(1, 4, 64, 64)
    for kwargs, cols in cases:
        enc = build_encoder("satlas_swinb_landsat_si", weights=landsat_published, **kwargs, **TINY).eval()
        full = torch.zeros(1, 11, 64, 64)
        full[:, list(cols)] = x
        with torch.no_grad():
            got = enc.forward_features(x, layers=[3], norm=True)[0]
        assert rel_err(got, _taps(ref, full, True)[3]) <= TOL, kwargs


def test_landsat_entry_takes_torchgeos_own_band_names(tg, landsat_published):
    """torchgeo names the Landsat weights' bands B01..B11 (its ``meta["bands"]``): those names
    select the whole pretrained kernel in order. Before, B01..B09 matched nothing under the
    Landsat sensor and started at zero with only a log warning (B10/B11 still loaded)."""
    ref = _upstream(tg, landsat_published, in_chans=11)
    names = tuple(tg.Swin_V2_B_Weights.LANDSAT_SI_SATLAS.meta["bands"])
    assert names[0] == "B01" and len(names) == 11
    enc = build_encoder("satlas_swinb_landsat_si", weights=landsat_published, bands=names, **TINY).eval()
    x = torch.randn(1, 11, 64, 64)
    with torch.no_grad():
        got = enc.forward_features(x, layers=[3], norm=True)[0]
    assert rel_err(got, _taps(ref, x, True)[3]) <= TOL
