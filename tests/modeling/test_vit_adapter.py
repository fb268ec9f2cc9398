"""ViT-Adapter: deformable attention equal to detrex's, strides 4-32 for odd sizes, Prithvi's
time axis and Clay's metadata pass through, pretrained trunk untouched at init, detectron2
FPN on top, and the packaged configs train."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("detectron2", reason="detectron2 is not installed: see README for installing it from source")

from detectron2.modeling.backbone.fpn import FPN, LastLevelMaxPool  # noqa: E402

from d2geo.modeling import GeoBackbone, ViTAdapter  # noqa: E402
from d2geo.modeling.vit_adapter import MSDeformAttn, ms_deform_attn_core  # noqa: E402

#: how the tests use the tiny test variants dinov2_test and clay_test
DINO = dict(patch_size=16, img_size=32, bands=["red", "green", "blue"])
CLAY = dict(sensor="hls", bands=["blue", "green", "red", "nir_narrow"])
#: Prithvi v2 without time and location codes (prithvi_test has them; this test passes no metadata)
PRITHVI = dict(embed_dim=64, depth=4, num_heads=4, img_size=32, num_frames=2)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_deformable_attention_equals_detrex():
    msda = pytest.importorskip("detrex.layers.multi_scale_deform_attn", reason="detrex is not installed")
    torch.manual_seed(0)
    shapes = [(5, 7), (3, 4), (2, 2)]
    S = sum(h * w for h, w in shapes)
    value = torch.randn(2, S, 4, 8, dtype=torch.float64)
    loc = torch.rand(2, 11, 4, 3, 5, 2, dtype=torch.float64) * 1.2 - 0.1  # some points fall outside
    weights = torch.rand(2, 11, 4, 3, 5, dtype=torch.float64)
    ref = msda.multi_scale_deformable_attn_pytorch(value, torch.tensor(shapes), loc, weights)
    torch.testing.assert_close(ms_deform_attn_core(value, shapes, loc, weights), ref, rtol=1e-12, atol=1e-12)

    # the whole module: same parameterisation as detrex's MultiScaleDeformableAttention
    ours = MSDeformAttn(32, num_heads=4, num_levels=3, num_points=2)
    theirs = msda.MultiScaleDeformableAttention(embed_dim=32, num_heads=4, num_levels=3, num_points=2,
                                                dropout=0.0, batch_first=True)
    with torch.no_grad():
        for p in ours.parameters():
            p.normal_(0, 0.1)
    theirs.load_state_dict(ours.state_dict())
    query, inputs = torch.randn(2, 9, 32), torch.randn(2, S, 32)
    refp = torch.rand(2, 9, 2)
    want = theirs(query, value=inputs, identity=torch.zeros_like(query),
                  reference_points=refp[:, :, None].expand(-1, -1, 3, -1),
                  spatial_shapes=torch.tensor(shapes), level_start_index=torch.tensor([0, 35, 47]))
    torch.testing.assert_close(ours(query, refp, inputs, shapes), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("size", [(48, 80), (16, 32), (112, 48), (64, 64)])
def test_output_strides_for_odd_sizes(size):
    torch.manual_seed(0)
    adapter = ViTAdapter(GeoBackbone("dinov2_test", encoder_kwargs=DINO), deform_heads=4)
    H, W = size
    out = adapter(torch.randn(2, 3, H, W))
    assert list(out) == ["res2", "res3", "res4", "res5"]
    for name, stride in (("res2", 4), ("res3", 8), ("res4", 16), ("res5", 32)):
        assert out[name].shape == (2, 64, -(-H // stride), -(-W // stride)), (name, out[name].shape)
    assert adapter.padding_constraints == {"size_divisibility": 32}
    empty = adapter(torch.randn(0, 3, H, W))
    assert {k: v.shape for k, v in empty.items()} == {k: (0, *v.shape[1:]) for k, v in out.items()}


def test_trunk_is_the_pretrained_encoder_at_init():
    torch.manual_seed(0)
    net = GeoBackbone("dinov2_test", encoder_kwargs=DINO, norm=False)
    adapter = ViTAdapter(net, deform_heads=4).eval()
    seen = []
    hook = list(net.encoder.get_blocks())[-1].register_forward_hook(lambda m, a, o: seen.append(o))
    x = torch.randn(1, 3, 48, 64)
    adapter(x)
    hook.remove()
    plain = net.encoder.forward_features(x, layers=[3], norm=False)[0]
    P = net.encoder.num_prefix_tokens
    torch.testing.assert_close(seen[0][:, P:].transpose(1, 2).reshape(plain.shape), plain, rtol=0, atol=0)
    with torch.no_grad():
        for inter in adapter.interactions:
            inter.gamma.fill_(1.0)
    seen.clear()
    hook = list(net.encoder.get_blocks())[-1].register_forward_hook(lambda m, a, o: seen.append(o))
    adapter(x)
    hook.remove()
    assert not torch.allclose(seen[0][:, P:].transpose(1, 2).reshape(plain.shape), plain)


def test_prithvi_time_axis_passes_through():
    torch.manual_seed(0)
    net = GeoBackbone("prithvi_eo_v2_300", temporal_fold="concat", encoder_kwargs=PRITHVI)
    adapter = ViTAdapter(net, deform_heads=4).eval()
    assert {s.channels for s in adapter.output_shape().values()} == {128}
    x = torch.randn(2, 6, 2, 48, 80)
    cat = adapter(x)
    assert cat["res2"].shape == (2, 128, 12, 20) and cat["res5"].shape == (2, 128, 2, 3)
    # the same modules folded otherwise: every level is the per-time-step map folded over time
    net.temporal_fold = "mean"
    mean = adapter(x)
    net.temporal_fold = "diff"
    diff = adapter(x)
    for k in cat:
        first, second = cat[k][:, :64], cat[k][:, 64:]
        torch.testing.assert_close(mean[k], (first + second) / 2, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(diff[k], second - first, rtol=1e-5, atol=1e-5)
    proj = ViTAdapter(GeoBackbone(net.encoder, temporal_fold="attention"), deform_heads=4, out_channels=32)
    assert proj(x)["res4"].shape == (2, 32, 3, 5)


def test_clay_metadata_reaches_the_encoder():
    torch.manual_seed(0)
    net = GeoBackbone("clay_test", encoder_kwargs=CLAY)
    adapter = ViTAdapter(net, deform_heads=4).eval()
    x = torch.randn(2, 4, 32, 48)
    md = {"gsd": torch.tensor([10.0, 10.0]), "latlon": torch.tensor([[47.0, 8.0], [10.0, 20.0]]),
          "timestamps": torch.tensor([[1.6e9], [1.61e9]], dtype=torch.float64)}
    with net.use_metadata(md):
        a = adapter(x)
    with net.use_metadata({**md, "gsd": torch.tensor([30.0, 30.0])}):
        b = adapter(x)
    assert a["res2"].shape == (2, 72, 8, 12)
    assert not torch.allclose(a["res4"], b["res4"])  # the encoder saw the other ground sample distance


def test_detectron2_fpn_on_the_adapter():
    adapter = ViTAdapter(GeoBackbone("dinov2_test", encoder_kwargs=DINO), deform_heads=4)
    fpn = FPN(bottom_up=adapter, in_features=["res2", "res3", "res4", "res5"], out_channels=32,
              top_block=LastLevelMaxPool())
    out = fpn(torch.randn(1, 3, 64, 96))
    assert {k: tuple(v.shape[-2:]) for k, v in out.items()} == {
        "p2": (16, 24), "p3": (8, 12), "p4": (4, 6), "p5": (2, 3), "p6": (1, 2)}
    assert fpn.size_divisibility == 32


def test_bad_settings():
    net = GeoBackbone("dinov2_test", encoder_kwargs=DINO)
    with pytest.raises(ValueError, match="num_interactions"):
        ViTAdapter(net, num_interactions=5)
    with pytest.raises(ValueError, match="divisible by num_heads"):
        ViTAdapter(net, deform_heads=6)
    with pytest.raises(ValueError, match="choose from"):
        ViTAdapter(net, deform_heads=4, out_features=["p3"])
    with pytest.raises(TypeError, match="GeoBackbone"):
        ViTAdapter(torch.nn.Linear(2, 2))


def test_terramind_of_one_modality_adapts_and_of_several_is_refused():
    one = ViTAdapter(GeoBackbone("terramind_test", encoder_kwargs=dict(bands=["S2L2A"])), deform_heads=4)
    with torch.no_grad():
        out = one.eval()(torch.randn(2, 12, 64, 64))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "res2": (2, 64, 16, 16), "res3": (2, 64, 8, 8), "res4": (2, 64, 4, 4), "res5": (2, 64, 2, 2)}
    several = GeoBackbone("terramind_test", encoder_kwargs=dict(bands=["S2L2A", "S1RTC"]))
    with pytest.raises(ValueError, match=r"one grid per modality \(S2L2A, S1RTC\); use the multi-layer pyramid"):
        ViTAdapter(several, deform_heads=4)


# -- packaged configs train ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    from heads_tiny import synthetic_geotiffs

    return synthetic_geotiffs(tmp_path_factory, "adapter")


@pytest.mark.parametrize("name", ["dinov2/upernet_vit_adapter_vitb14.py",
                                  "prithvi/upernet_vit_adapter_eo_v2_300_tl.py"])
def test_adapter_config_trains(name, synthetic, tmp_path):
    from heads_tiny import falling, tiny_config, train_steps

    cfg = tiny_config(name, synthetic, tmp_path)
    model, totals = train_steps(cfg, steps=14, lr=3e-3)
    assert isinstance(model.backbone, ViTAdapter)
    assert falling(totals), totals
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.backbone.spm.parameters())


def test_detrex_channel_mapper_on_the_adapter():
    neck = pytest.importorskip("detrex.modeling.neck", reason="detrex is not installed")
    adapter = ViTAdapter(GeoBackbone("dinov2_test", encoder_kwargs=DINO), deform_heads=4, out_channels=48,
                         out_features=["res3", "res4", "res5"])
    assert list(adapter.output_shape()) == ["res3", "res4", "res5"]
    mapper = neck.ChannelMapper(input_shapes=adapter.output_shape(), in_features=["res3", "res4", "res5"],
                                out_channels=32, kernel_size=1, norm_layer=torch.nn.GroupNorm(8, 32), num_outs=4)
    outs = mapper(adapter(torch.randn(1, 3, 64, 96)))
    assert [tuple(o.shape) for o in outs] == [(1, 32, 8, 12), (1, 32, 4, 6), (1, 32, 2, 3), (1, 32, 1, 2)]
