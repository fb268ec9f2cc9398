"""detectron2 glue: GeoBackbone, pyramids, meta-architectures, lr decay / weight decay."""
from __future__ import annotations

import json
import os
import types

import pytest
import torch

pytest.importorskip("detectron2", reason="detectron2 is not installed: see README for installing it from source")

from detectron2.config import LazyCall as L  # noqa: E402
from detectron2.config import get_cfg  # noqa: E402
from detectron2.modeling import build_model  # noqa: E402
from detectron2.modeling.backbone.fpn import LastLevelMaxPool  # noqa: E402
from detectron2.modeling.backbone.vit import SimpleFeaturePyramid as D2SimpleFeaturePyramid  # noqa: E402
from detectron2.solver.build import get_default_optimizer_params  # noqa: E402
from detectron2.structures import ImageList  # noqa: E402
from detectron2.utils.events import EventStorage  # noqa: E402

import helpers  # noqa: E402
from helpers import (  # noqa: E402
    TINY_DINO, dino_backbone, rel_err, tiny_mask_rcnn, tiny_segmentor,
)
from helpers import make_sample as _sample  # noqa: E402
from d2geo.encoders import EncoderInputError, build_encoder, list_encoders  # noqa: E402
from d2geo.modeling import (  # noqa: E402
    GeoBackbone,
    GeoSemanticSegmentor,
    MultiLayerPyramid,
    SimpleFeaturePyramid,
    add_d2geo_config,
    collate_metadata,
    encoder_layer_ids,
    fold_time,
    geo_optimizer_params,
    lr_decay_factor_func,
    no_weight_decay_overrides,
    normalize_image,
)

#: how the tests use prithvi_test (Prithvi-EO-2.0 with temporal and location embeddings, 64 wide)
TINY_PRITHVI = dict(patch_size=16, img_size=32, num_frames=2)


pytestmark = pytest.mark.usefixtures("one_thread")


def needs(pattern: str):
    return pytest.mark.skipif(not list_encoders(pattern), reason=f"no {pattern} encoder registered yet")


# -- GeoBackbone ---------------------------------------------------------------------------------
def test_backbone_output_shape_names_and_forward():
    b = dino_backbone(layers=(-1, 1))
    assert b.out_features == ["layer1", "layer3"]  # block order, non-negative indices
    shapes = b.output_shape()
    assert {n: (s.channels, s.stride) for n, s in shapes.items()} == {"layer1": (64, 16), "layer3": (64, 16)}
    assert b.size_divisibility == 16 and b.padding_constraints == {"size_divisibility": 16}
    out = b(torch.randn(2, 5, 48, 80))
    assert list(out) == ["layer1", "layer3"]
    assert all(v.shape == (2, 64, 3, 5) for v in out.values())
    # the taps are the encoder's own blocks
    ref = b.encoder.forward_features(torch.zeros(1, 5, 32, 32), layers=[1, 3])
    got = b(torch.zeros(1, 5, 32, 32))
    assert torch.equal(got["layer1"], ref[0]) and torch.equal(got["layer3"], ref[1])
    assert "encoder.vit.blocks.0.attn.qkv.weight" in b.state_dict()


def test_backbone_bad_arguments_and_inputs():
    with pytest.raises(ValueError, match="same block twice"):
        dino_backbone(layers=(3, -1))
    with pytest.raises(EncoderInputError, match="out of range"):
        dino_backbone(layers=(4,))
    with pytest.raises(ValueError, match="temporal_fold"):
        dino_backbone(temporal_fold="sum")
    b = dino_backbone()
    with pytest.raises(EncoderInputError, match="padding_constraints"):
        b(torch.randn(1, 5, 70, 90))
    with pytest.raises(EncoderInputError, match="not temporal"):
        b(torch.randn(1, 5, 2, 32, 32))
    enc = build_encoder("dinov2_test", **TINY_DINO)
    with pytest.raises(ValueError, match="only apply when the encoder is given by name"):
        GeoBackbone(enc, drop_path_rate=0.1)


def test_unused_blocks_are_reported(caplog):
    with caplog.at_level("WARNING", logger="d2geo.modeling.backbone"):
        dino_backbone(layers=(1,))
    assert "blocks 2..3 never run" in caplog.text


def test_drop_path_and_grad_checkpointing_reach_encoder():
    b = dino_backbone(drop_path_rate=0.3, grad_checkpointing=True)
    assert b.encoder.grad_checkpointing
    assert b.encoder.vit.blocks[-1].drop_path1.drop_prob == pytest.approx(0.3)


def test_window_attention_from_the_backbone():
    """window_size/global_blocks reach the encoder: windowed blocks change the features,
    and the same weights with global attention everywhere give the plain encoder's."""
    windowed = dino_backbone(window_size=2, global_blocks=(3,)).eval()
    with torch.no_grad():  # layer scales start at 1e-5: make the attention count
        for name, p in windowed.named_parameters():
            if name.endswith(".gamma"):
                p.fill_(1.0)
    plain = dino_backbone().eval()
    plain.load_state_dict(windowed.state_dict())
    assert windowed.encoder.window_size == (2, 2) and windowed.encoder.global_blocks == (3,)
    x = torch.randn(1, 5, 96, 96)
    with torch.no_grad():
        a = next(iter(windowed(x).values()))
        b = next(iter(plain(x).values()))
        assert rel_err(a, b) > 1e-3
        windowed.encoder.set_window_attention(0)
        torch.testing.assert_close(next(iter(windowed(x).values())), b)


# -- padding and pyramids ------------------------------------------------------------------------
def test_simple_feature_pyramid_pads_non_multiple_sizes():
    net = dino_backbone()
    ours = SimpleFeaturePyramid(net, out_channels=32, top_block=LastLevelMaxPool())
    theirs = D2SimpleFeaturePyramid(net, "layer3", 32, (4.0, 2.0, 1.0, 0.5), top_block=LastLevelMaxPool())
    imgs = [torch.randn(5, 70, 90), torch.randn(5, 50, 40)]
    # detectron2's own class never pads (misspelt key, size_divisibility 0) ...
    unpadded = ImageList.from_tensors(imgs, theirs.size_divisibility, padding_constraints=theirs.padding_constraints)
    assert tuple(unpadded.tensor.shape[-2:]) == (70, 90)
    # ... ours pads to the coarsest stride
    assert ours.size_divisibility == 32 and ours.padding_constraints["size_divisibility"] == 32
    il = ImageList.from_tensors(imgs, ours.size_divisibility, padding_constraints=ours.padding_constraints)
    assert tuple(il.tensor.shape) == (2, 5, 96, 96) and il.image_sizes == [(70, 90), (50, 40)]
    out = ours(il.tensor)
    assert {k: tuple(v.shape[-2:]) for k, v in out.items()} == {
        "p2": (24, 24), "p3": (12, 12), "p4": (6, 6), "p5": (3, 3), "p6": (2, 2)}
    assert {k: (s.channels, s.stride) for k, s in ours.output_shape().items()} == {
        "p2": (32, 4), "p3": (32, 8), "p4": (32, 16), "p5": (32, 32), "p6": (32, 64)}
    # divisibility is also a multiple of the patch size when the coarsest level is finer
    fine = SimpleFeaturePyramid(net, out_channels=32, scale_factors=(4.0, 2.0))
    assert fine.size_divisibility == 16
    square = SimpleFeaturePyramid(net, out_channels=32, square_pad=128)
    il = ImageList.from_tensors(imgs, square.size_divisibility, padding_constraints=square.padding_constraints)
    assert tuple(il.tensor.shape[-2:]) == (128, 128)


def test_pyramids_need_power_of_two_strides():
    net = dino_backbone(encoder_kwargs=dict(patch_size=14, img_size=56))
    with pytest.raises(ValueError, match="patch_size=16"):
        SimpleFeaturePyramid(net, out_channels=32)
    with pytest.raises(ValueError, match="patch_size=16"):
        MultiLayerPyramid(dino_backbone(layers=(0, 1, 2, 3), encoder_kwargs=dict(patch_size=14, img_size=56)), 32)


def test_multilayer_pyramid_shapes_and_taps():
    net = dino_backbone(layers=(0, 1, 2, 3))
    pyr = MultiLayerPyramid(net, 32, top_block=LastLevelMaxPool())
    assert pyr.in_features == ["layer0", "layer1", "layer2", "layer3"]
    assert {k: (s.channels, s.stride) for k, s in pyr.output_shape().items()} == {
        "p2": (32, 4), "p3": (32, 8), "p4": (32, 16), "p5": (32, 32), "p6": (32, 64)}
    assert pyr.padding_constraints == {"size_divisibility": 32, "square_size": 0}
    il = ImageList.from_tensors([torch.randn(5, 70, 90)], pyr.size_divisibility,
                                padding_constraints=pyr.padding_constraints)
    out = pyr(il.tensor)
    assert {k: tuple(v.shape[1:]) for k, v in out.items()} == {
        "p2": (32, 24, 24), "p3": (32, 12, 12), "p4": (32, 6, 6), "p5": (32, 3, 3), "p6": (32, 2, 2)}
    # p2 comes from the shallowest tap: changing only the last block leaves it alone
    x = il.tensor
    before = pyr(x)
    with torch.no_grad():
        net.encoder.vit.blocks[3].mlp.fc2.weight.add_(1.0)
    after = pyr(x)
    assert torch.equal(before["p2"], after["p2"]) and not torch.allclose(before["p5"], after["p5"])
    with pytest.raises(ValueError, match="four backbone outputs"):
        MultiLayerPyramid(dino_backbone(layers=(1, 3)), 32)
    with pytest.raises(ValueError, match="scale_factors"):
        MultiLayerPyramid(net, 32, scale_factors=(4.0, 2.0, 1.0, 0.3))


@needs("clay_*")
def test_multilayer_pyramid_for_patch_8_clay():
    net = GeoBackbone("clay_test", layers=(0, 1, 2, 3))
    assert net.output_shape()["layer3"].stride == 8
    pyr = MultiLayerPyramid(net, 32, scale_factors=(2.0, 1.0, 0.5, 0.25), top_block=LastLevelMaxPool())
    assert {k: s.stride for k, s in pyr.output_shape().items()} == {"p2": 4, "p3": 8, "p4": 16, "p5": 32, "p6": 64}
    assert pyr.size_divisibility == 32
    with pyr.net.use_metadata({"wavelengths": torch.tensor([0.49, 0.56, 0.665]), "gsd": 10.0}):
        out = pyr(torch.randn(1, 3, 64, 32))
    assert {k: tuple(v.shape[-2:]) for k, v in out.items()} == {
        "p2": (16, 8), "p3": (8, 4), "p4": (4, 2), "p5": (2, 1), "p6": (1, 1)}


# -- freezing ------------------------------------------------------------------------------------
def test_freeze_first_blocks_and_embeddings():
    b = dino_backbone(freeze=2, drop_path_rate=0.5)
    enc = b.encoder
    trainable = {n for n, p in enc.named_parameters() if p.requires_grad}
    expected = {n for n, _ in enc.named_parameters() if n.startswith(("vit.blocks.2.", "vit.blocks.3.", "vit.norm."))}
    assert trainable == expected
    assert not enc.vit.pos_embed.requires_grad and not enc.vit.cls_token.requires_grad
    assert not enc.vit.reg_token.requires_grad and not enc.vit.patch_embed.proj.weight.requires_grad
    wrapper = torch.nn.Sequential(b)
    wrapper.train()
    assert not enc.vit.blocks[1].training and not enc.vit.blocks[1].drop_path1.training
    assert enc.vit.blocks[2].training and enc.vit.blocks[3].drop_path1.training
    wrapper.eval()
    assert not enc.vit.blocks[3].training
    # gradients reach exactly the trainable parameters (eval: no random drop-path)
    b(torch.randn(2, 5, 32, 32))["layer3"].square().sum().backward()
    got = {n for n, p in enc.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert got == expected


def test_freeze_all_disables_drop_path_and_none_keeps_everything():
    b = dino_backbone(freeze="all", drop_path_rate=0.9)
    assert not any(p.requires_grad for p in b.encoder.parameters())
    b.train()
    x = torch.randn(2, 5, 32, 32)
    assert torch.equal(b(x)["layer3"], b(x)["layer3"])  # drop-path off in frozen blocks
    free = dino_backbone(drop_path_rate=0.9).train()
    assert all(p.requires_grad for p in free.encoder.parameters())
    assert not torch.equal(free(x)["layer3"], free(x)["layer3"])
    assert dino_backbone(freeze="0").freeze == 0
    for bad in (5, True, "some"):
        with pytest.raises(ValueError, match="freeze"):
            dino_backbone(freeze=bad)


# -- temporal folds (Prithvi) -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def terratorch_prithvi():
    return helpers.terratorch_prithvi()


def test_concat_fold_matches_terratorch_layout(terratorch_prithvi):
    B, D, t, h, w = 2, 8, 3, 4, 4
    fmap = torch.randn(B, D, t, h, w)
    tokens = torch.cat([torch.randn(B, 1, D), fmap.permute(0, 2, 3, 4, 1).reshape(B, t * h * w, D)], dim=1)
    fake_vit = types.SimpleNamespace(
        embed_dim=D, patch_embed=types.SimpleNamespace(input_size=(t, 64, 64), patch_size=(1, 16, 16)))
    ref = terratorch_prithvi.PrithviViT.prepare_features_for_image_model(fake_vit, [tokens])[0]
    assert rel_err(fold_time(fmap, "concat"), ref) == 0.0
    assert torch.equal(fold_time(fmap, "mean"), fmap.mean(2))


@needs("prithvi_eo_*")
def test_prithvi_backbone_concat_and_mean():
    x = torch.randn(2, 6, 2, 32, 48)
    cat = GeoBackbone("prithvi_test", layers=(1, 3), encoder_kwargs=TINY_PRITHVI)
    assert {k: (s.channels, s.stride) for k, s in cat.output_shape().items()} == {
        "layer1": (128, 16), "layer3": (128, 16)}
    out = cat(x)
    feats = cat.encoder.forward_features(x, layers=[1, 3])
    assert feats[0].shape == (2, 64, 2, 2, 3)
    assert out["layer1"].shape == (2, 128, 2, 3)
    assert torch.equal(out["layer3"][:, :64], feats[1][:, :, 0]) and torch.equal(out["layer3"][:, 64:], feats[1][:, :, 1])
    mean = GeoBackbone(cat.encoder, layers=(3,), temporal_fold="mean")
    assert mean.output_shape()["layer3"].channels == 64
    assert torch.allclose(mean(x)["layer3"], feats[1].mean(2))
    with pytest.raises(EncoderInputError, match=r"\(C, T, H, W\)"):
        cat(torch.randn(2, 6, 32, 32))
    single = GeoBackbone("prithvi_test", encoder_kwargs={**TINY_PRITHVI, "num_frames": 1})
    assert single(torch.randn(1, 6, 32, 32))["layer3"].shape == (1, 64, 2, 2)


# -- metadata -------------------------------------------------------------------------------------
def test_backbone_metadata_handover():
    b = dino_backbone()
    spy = _Spy(b.encoder)
    x = torch.randn(2, 5, 32, 32)
    md = {"gsd": torch.tensor([10.0, 20.0])}
    with b.use_metadata(md):
        b(x)
        with pytest.raises(EncoderInputError, match="set_metadata"):
            b(x[:1])
    assert b.metadata is None
    b(x)
    assert spy.calls[0][1]["gsd"].tolist() == [10.0, 20.0] and spy.calls[-1][1] is None
    b.set_metadata({"gsd": 10.0})  # one value for the batch
    b(x)
    assert spy.calls[-1][1] == {"gsd": 10.0}


def test_collate_metadata_schema_and_errors():
    waves = [0.49, 0.56, 0.665]
    dicts = [{"metadata": {"timestamps": [1.6e9, 1.61e9], "latlon": [45.0, 7.0], "gsd": 10.0, "wavelengths": waves}},
             {"metadata": {"timestamps": [1.7e9, 1.71e9], "latlon": [-3.0, 120.0], "gsd": 30.0, "wavelengths": waves}}]
    md = collate_metadata(dicts)
    assert md["timestamps"].shape == (2, 2) and md["timestamps"].dtype == torch.float64
    assert md["timestamps"][1, 1].item() == 1.71e9  # float64 keeps second precision
    assert md["latlon"].shape == (2, 2) and md["gsd"].tolist() == [10.0, 30.0]
    assert md["wavelengths"].shape == (3,)
    assert collate_metadata([{}, {}]) is None
    other = [dicts[0], {"metadata": {**dicts[1]["metadata"], "wavelengths": [0.49, 0.56, 0.842]}}]
    with pytest.raises(EncoderInputError, match="one sensor"):
        collate_metadata(other)
    with pytest.raises(EncoderInputError, match="no 'metadata'"):
        collate_metadata([dicts[0], {}])
    with pytest.raises(EncoderInputError, match="same keys"):
        collate_metadata([dicts[0], {"metadata": {"gsd": 10.0}}])
    with pytest.raises(EncoderInputError, match="unknown metadata keys"):
        collate_metadata([{"metadata": {"gsd": 1.0, "time": 3}}])
    with pytest.raises(EncoderInputError, match="different numbers of timestamps"):
        collate_metadata([{"metadata": {"timestamps": [1.0]}}, {"metadata": {"timestamps": [1.0, 2.0]}}])


def test_normalize_image_per_band_over_frames():
    img = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).reshape(2, 3, 2, 2)
    mean, std = torch.tensor([1.0, 100.0]), torch.tensor([2.0, 4.0])
    out = normalize_image(img, mean, std)
    assert torch.equal(out[0], (img[0] - 1) / 2) and torch.equal(out[1], (img[1] - 100) / 4)
    assert normalize_image(torch.ones(2, 4, 4, dtype=torch.uint8), mean, std).dtype == torch.float32
    with pytest.raises(EncoderInputError, match="one mean and std per band"):
        normalize_image(torch.zeros(3, 8, 8), mean, std)


@needs("prithvi_eo_*")
def test_preprocess_normalizes_then_pads_time_series_batches():
    """GeoInputMixin.preprocess_image: per-band normalization over every frame, then zero padding
    of the (C, T, H, W) images to the backbone's divisibility (padding after normalizing)."""
    net = GeoBackbone("prithvi_test", layers=(0, 1, 2, 3), encoder_kwargs=TINY_PRITHVI)
    model = tiny_segmentor(MultiLayerPyramid(net, 32), num_bands=6)
    div = model.backbone.size_divisibility
    a, b = torch.randn(6, 2, 40, 50) + 500, torch.randn(6, 2, 30, 20) + 500
    il = model.preprocess_image([{"image": a}, {"image": b}])
    H, W = -(-40 // div) * div, -(-50 // div) * div
    assert tuple(il.tensor.shape) == (2, 6, 2, H, W) and il.image_sizes == [(40, 50), (30, 20)]
    assert torch.allclose(il.tensor[0, :, :, :40, :50], (a - 500) / 290)
    assert torch.allclose(il.tensor[1, :, :, :30, :20], (b - 500) / 290)
    assert il.tensor[0, :, :, 40:].abs().sum() == 0 and il.tensor[1, :, :, :, 20:].abs().sum() == 0


class _Spy:
    """Records the metadata the encoder receives."""

    def __init__(self, encoder):
        self.calls = []
        orig = encoder.forward_features

        def wrapped(x, **kw):
            self.calls.append((tuple(x.shape), kw.get("metadata")))
            return orig(x, **kw)

        encoder.forward_features = wrapped


@pytest.fixture(scope="module")
def trained_rcnn():
    """A tiny Mask R-CNN trained for a few iterations on one multispectral batch with metadata."""
    torch.manual_seed(0)
    model = tiny_mask_rcnn()
    spy = _Spy(model.backbone.net.encoder)
    batch = [_sample(seed=0), _sample(seed=1)]
    losses = _train(model, batch, iters=8, lr=1e-3)
    return model.eval(), spy, losses


def test_metadata_reaches_encoder_in_training_and_inference_rcnn(trained_rcnn):
    model, spy, _ = trained_rcnn
    assert len(spy.calls) == 8
    for shape, md in spy.calls:  # every training step
        assert shape == (2, 5, 64, 64)
        assert md["latlon"].tolist() == [[10.0, 20.0], [11.0, 20.0]] and md["gsd"].tolist() == [10.0, 11.0]
        assert md["timestamps"].shape == (2, 1) and md["timestamps"].dtype == torch.float64
    with torch.no_grad():
        model([_sample(seed=3, meta=True)])
    assert spy.calls[-1][1]["gsd"].tolist() == [13.0]
    with torch.no_grad():
        model([_sample(seed=3, meta=False)])
    assert spy.calls[-1][1] is None  # no stale metadata from the previous batch
    bad = _sample()
    bad["metadata"]["wavelengths"] = [0.5, 0.6]
    with pytest.raises(EncoderInputError, match="wavelengths"):
        model([bad])


@needs("prithvi_eo_*")
def test_metadata_changes_prithvi_segmentor_output():
    net = GeoBackbone("prithvi_test", layers=(0, 1, 2, 3), encoder_kwargs=TINY_PRITHVI)
    with torch.no_grad():  # the coordinate scales start at 0.1; make the encodings matter
        net.encoder.location_embed_enc.scale.fill_(1.0)
    model = tiny_segmentor(MultiLayerPyramid(net, 32), num_bands=6).eval()
    spy = _Spy(net.encoder)
    a = _sample(C=6, T=2, H=32, W=32)
    b = {**a, "metadata": {**a["metadata"], "latlon": [-40.0, 150.0]}}
    with torch.no_grad():
        ya, yb = model([a])[0]["sem_seg"], model([b])[0]["sem_seg"]
    assert spy.calls[0][1]["timestamps"].shape == (1, 2)
    assert spy.calls[1][1]["latlon"].tolist() == [[-40.0, 150.0]]
    assert not torch.allclose(ya, yb)
    model.train()
    model([a, b])
    assert spy.calls[-1][1]["latlon"].shape == (2, 2)


@needs("clay_*")
def test_clay_wavelengths_flow_through_rcnn():
    net = L(GeoBackbone)(encoder="clay_test", encoder_kwargs=dict(patch_size=16))
    model = tiny_mask_rcnn(backbone=net, num_bands=3).eval()
    x = _sample(C=3)
    x["metadata"]["wavelengths"] = [0.665, 0.56, 0.49]
    y = {**x, "metadata": {**x["metadata"], "wavelengths": [0.842, 1.61, 2.19]}}
    feats = {}
    model.backbone.register_forward_hook(lambda m, i, o: feats.update({len(feats): o["p4"]}))
    with torch.no_grad():
        model([x])
        model([y])
    assert not torch.allclose(feats[0], feats[1])
    no_waves = {**x, "metadata": {k: v for k, v in x["metadata"].items() if k != "wavelengths"}}
    with pytest.raises(EncoderInputError, match="wavelength"):
        with torch.no_grad():
            model([no_waves])


# -- training and inference -----------------------------------------------------------------------
def _train(model, batch, iters, lr):
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    losses = []
    for it in range(iters):
        with EventStorage(it):
            total = sum(model(batch).values())
        opt.zero_grad()
        total.backward()
        opt.step()
        losses.append(total.item())
    return losses


def test_mask_rcnn_trains_and_predicts_at_input_size(trained_rcnn):
    model, _, losses = trained_rcnn
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3, losses
    model.eval()
    x = _sample(H=70, W=90, meta=True)
    del x["height"], x["width"]
    with torch.no_grad():
        inst = model([x])[0]["instances"]
    assert inst.image_size == (70, 90) and len(inst) > 0
    assert inst.pred_masks.shape[-2:] == (70, 90)
    boxes = inst.pred_boxes.tensor
    assert (boxes[:, 2] <= 90).all() and (boxes[:, 3] <= 70).all() and (boxes >= 0).all()
    x.update(height=140, width=180)  # detectron2's rescaling to the requested size still works
    with torch.no_grad():
        assert model([x])[0]["instances"].image_size == (140, 180)


def test_semantic_segmentor_trains_and_predicts_at_input_size():
    torch.manual_seed(0)
    model = tiny_segmentor(SimpleFeaturePyramid(dino_backbone(), out_channels=32), num_bands=5)
    batch = [_sample(seed=0), _sample(seed=1)]
    losses = _train(model, batch, iters=4, lr=1e-3)
    assert losses[-1] < losses[0] / 2, losses
    model.eval()
    x = _sample(H=70, W=90)
    del x["height"], x["width"], x["sem_seg"]
    with torch.no_grad():
        assert model([x])[0]["sem_seg"].shape == (3, 70, 90)


@needs("prithvi_eo_*")
def test_temporal_segmentor_trains():
    torch.manual_seed(0)
    net = GeoBackbone("prithvi_test", layers=(0, 1, 2, 3), encoder_kwargs=TINY_PRITHVI)
    model = tiny_segmentor(MultiLayerPyramid(net, 32), num_bands=6)
    batch = [_sample(C=6, T=2, H=32, W=32, seed=0), _sample(C=6, T=2, H=32, W=32, seed=1)]
    losses = _train(model, batch, iters=4, lr=1e-3)
    assert losses[-1] < losses[0] / 2, losses
    model.eval()
    x = _sample(C=6, T=2, H=40, W=50)
    del x["height"], x["width"], x["sem_seg"]
    with torch.no_grad():
        assert model([x])[0]["sem_seg"].shape == (3, 40, 50)


def test_yacs_config_builds_geo_models():
    cfg = get_cfg()
    add_d2geo_config(cfg)
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.META_ARCHITECTURE = "GeoSemanticSegmentor"
    cfg.MODEL.BACKBONE.NAME = "build_geo_vit_fpn_backbone"
    cfg.MODEL.D2GEO.ENCODER = "dinov2_test"
    cfg.MODEL.D2GEO.FREEZE = "2"
    for k, v in TINY_DINO.items():
        cfg.MODEL.D2GEO.ENCODER_KWARGS[k] = v
    cfg.MODEL.PIXEL_MEAN, cfg.MODEL.PIXEL_STD = [500.0] * 5, [290.0] * 5
    cfg.MODEL.FPN.OUT_CHANNELS = 32
    cfg.MODEL.SEM_SEG_HEAD.IN_FEATURES = ["p2", "p3", "p4", "p5"]
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = 3
    cfg.MODEL.SEM_SEG_HEAD.CONVS_DIM = 32
    cfg.MODEL.SEM_SEG_HEAD.NORM = ""
    model = build_model(cfg)
    assert isinstance(model, GeoSemanticSegmentor) and isinstance(model.backbone, MultiLayerPyramid)
    assert model.backbone.net.layers == [0, 1, 2, 3] and model.backbone.net.freeze == 2
    assert set(model.backbone.output_shape()) == {"p2", "p3", "p4", "p5", "p6"}
    model.eval()
    with torch.no_grad():
        assert model([{"image": torch.rand(5, 40, 50)}])[0]["sem_seg"].shape == (3, 40, 50)
    cfg.MODEL.BACKBONE.NAME = "build_geo_vit_sfp_backbone"
    cfg.MODEL.D2GEO.LAYERS = [-1]
    cfg.MODEL.D2GEO.TOP_BLOCK = False
    sfp = build_model(cfg).backbone
    assert isinstance(sfp, SimpleFeaturePyramid) and sfp.in_feature == "layer3"
    assert set(sfp.output_shape()) == {"p2", "p3", "p4", "p5"}
    cfg.MODEL.PIXEL_MEAN = [0.0] * 3
    with pytest.raises(ValueError, match="one mean and std per band"):
        build_model(cfg)


# -- learning-rate decay and weight decay -----------------------------------------------------------
FAMILIES = [  # the families' tiny test variants (4 blocks)
    ("dinov2_test", TINY_DINO, 4),
    ("dinov3_test", {}, 4),
    ("prithvi_test", dict(patch_size=16, img_size=32, num_frames=2), 4),
    ("clay_test", {}, 4),
]


def _family_model(name, kwargs, **backbone_kw):
    if name not in list_encoders(tests=True):
        pytest.skip(f"{name} is not registered yet")
    model = torch.nn.Module()
    model.backbone = SimpleFeaturePyramid(GeoBackbone(name, encoder_kwargs=kwargs, **backbone_kw),
                                          out_channels=16, scale_factors=(2.0, 1.0, 0.5))
    return model


def _param_settings(model, **kw):
    groups = geo_optimizer_params(model, base_lr=1.0, weight_decay=0.1, lr_decay_rate=0.5, **kw)
    by_id = {id(p): (g["lr"], g["weight_decay"]) for g in groups for p in g["params"]}
    return {n: by_id[id(p)] for n, p in model.named_parameters()}


RECORDED = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures", "param_groups_before_contract.json")


@pytest.mark.parametrize("name", ["dinov2_vits14_reg", "dinov2_vits14", "dinov3_vits16", "prithvi_eo_v2_100_tl",
                                  "clay_v1_5_large"])
def test_optimizer_groups_and_freezing_are_the_recorded_ones(name):
    """Every family's per-parameter lr factor and weight decay, and what freeze=2 freezes, are
    those recorded from the name-matching rules the encoder contract replaced."""
    with open(RECORDED, encoding="utf-8") as f:
        rec = json.load(f)[name]
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in rec["kwargs"].items()}
    model = _family_model(name, kwargs)
    got = _param_settings(model, weight_decay_norm=0.01)
    assert set(rec["params"]) <= set(got)  # a parameter added since (a new bias) is checked below
    for n, (lr, wd) in rec["params"].items():
        assert got[n] == (pytest.approx(lr), wd), n
    lr6 = {n: lr for n, (lr, _) in _param_settings(model, num_layers=6).items()}
    for n, lr in rec["lr_num_layers_6"].items():
        assert lr6[n] == pytest.approx(lr), n
    bb = GeoBackbone(name, encoder_kwargs=kwargs, freeze=2).train()
    frozen = {n for n, p in bb.encoder.named_parameters() if not p.requires_grad}
    enc_prefix = "backbone.net.encoder."
    recorded = {n[len(enc_prefix):] for n in rec["params"] if n.startswith(enc_prefix)}
    assert frozen & recorded == set(rec["freeze_2_frozen"])
    assert frozen == {n for n, layer in bb.encoder.param_layer_ids().items() if layer <= 2}
    in_eval = {n for n, m in bb.encoder.named_modules() if not m.training and next(m.parameters(recurse=False), None) is not None}
    owners = {n.rsplit(".", 1)[0] for n in recorded if "." in n}  # modules owning a recorded parameter
    assert in_eval & owners == set(rec["freeze_2_eval"])
    assert all(not p.requires_grad for n in in_eval for p in bb.encoder.get_submodule(n).parameters(recurse=False))


@pytest.mark.parametrize("name,kwargs,depth", FAMILIES, ids=[f[0].split("_")[0] for f in FAMILIES])
def test_lr_decay_and_weight_decay_agree_with_timm(name, kwargs, depth):
    """timm's own layer-decay grouping, fed the encoder's contract (group_matcher,
    no_weight_decay), gives every encoder parameter the lr scale and weight decay we give it."""
    from timm.optim import param_groups_layer_decay

    model = _family_model(name, kwargs)
    enc, prefix = model.backbone.net.encoder, "backbone.net.encoder."
    ours = _param_settings(model, weight_decay_norm=0.0)
    theirs = {}
    for g in param_groups_layer_decay(enc, weight_decay=0.1, layer_decay=0.5,
                                      no_weight_decay_list=enc.no_weight_decay()):
        for p in g["params"]:
            theirs[id(p)] = (g["lr_scale"], g["weight_decay"])
    named = dict(enc.named_parameters())
    assert len(theirs) == len(named)
    for n, p in named.items():
        assert ours[prefix + n] == (pytest.approx(theirs[id(p)][0]), theirs[id(p)][1]), n
    layers = enc.param_layer_ids()
    assert set(layers.values()) == set(range(depth + 2))  # embeddings, every block, the final norm
    assert {n for n, p in model.named_parameters() if not n.startswith(prefix)} <= {
        n for n, (lr, _) in ours.items() if lr == 1.0}  # pyramid: full lr


def test_lr_decay_is_for_geo_backbone_encoders_and_checks_depth():
    model = _family_model("dinov2_test", TINY_DINO)
    model.transformer = torch.nn.Module()  # detrex's DINO has transformer.encoder.layers.N: not backbone blocks
    model.transformer.encoder = torch.nn.Module()
    model.transformer.encoder.layers = torch.nn.ModuleList([torch.nn.Linear(2, 2)])
    factor = lr_decay_factor_func(model, 0.5)
    assert factor("transformer.encoder.layers.0.weight") == 1.0
    assert factor("backbone.net.encoder.vit.blocks.3.mlp.fc1.weight") == 0.5
    assert factor("backbone.net.encoder.vit.patch_embed.proj.weight") == 0.5 ** 5
    ids, depth = encoder_layer_ids(model)
    assert depth == 4 and ids["backbone.net.encoder.vit.norm.weight"] == 5
    with pytest.raises(ValueError, match="num_layers"):
        lr_decay_factor_func(model, 0.5, num_layers=2)
    with pytest.raises(ValueError, match="no GeoBackbone"):
        lr_decay_factor_func(torch.nn.Linear(2, 2), 0.5)


def test_family_exemptions_reach_detectron2_overrides_only_with_the_model():
    model = _family_model("clay_test", {})
    assert {"weight_tokens", "bias_token", "cls_token"} <= set(no_weight_decay_overrides(model))
    assert "weight_tokens" not in no_weight_decay_overrides()


def test_no_weight_decay_on_embeddings_tokens_norms_biases():
    model = tiny_mask_rcnn()
    groups = geo_optimizer_params(model, base_lr=1e-4, weight_decay=0.1, lr_decay_rate=0.7)
    wd = {id(p): g.get("weight_decay") for g in groups for p in g["params"]}
    lr = {id(p): g["lr"] for g in groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert len(wd) == len(named)
    zero = [n for n, p in named.items() if wd[id(p)] == 0.0]
    decayed = [n for n, p in named.items() if wd[id(p)] == 0.1]
    assert set(zero) | set(decayed) == set(named)
    enc = "backbone.net.encoder.vit."
    for n in (enc + "pos_embed", enc + "cls_token", enc + "reg_token", enc + "norm.weight",
              enc + "blocks.0.norm1.weight", enc + "blocks.0.ls1.gamma", enc + "blocks.0.attn.qkv.bias",
              "backbone.simfp_2.0.bias", "backbone.simfp_2.1.weight",  # detectron2 channel LayerNorm
              "backbone.simfp_2.4.norm.weight"):
        assert n in zero, n
    for n in (enc + "patch_embed.proj.weight", enc + "blocks.0.attn.qkv.weight", "backbone.simfp_2.4.weight",
              "roi_heads.box_head.fc1.weight"):
        assert n in decayed, n
    assert lr[id(named[enc + "blocks.3.mlp.fc1.weight"])] == pytest.approx(1e-4 * 0.7)
    assert lr[id(named[enc + "pos_embed"])] == pytest.approx(1e-4 * 0.7 ** 5)
    assert lr[id(named["roi_heads.box_head.fc1.weight"])] == pytest.approx(1e-4)
    # with detectron2's own function, the overrides cover the tokens and biases
    groups = get_default_optimizer_params(model, base_lr=1e-4, weight_decay=0.1, weight_decay_norm=0.0,
                                          overrides=no_weight_decay_overrides())
    wd = {id(p): g.get("weight_decay") for g in groups for p in g["params"]}
    for n in ("pos_embed", "cls_token", "reg_token", "norm.weight", "blocks.0.attn.qkv.bias"):
        assert wd[id(named[enc + n])] == 0.0, n
