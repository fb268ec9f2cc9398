"""TerraMind 1.0 fidelity against terratorch's ``TerraMindViT`` (module files from its wheel).

The checkpoints are random-weight state dicts of terratorch's pretraining model
``TerraMind`` (encoder-decoder, the layout of the published ``TerraMind_v1_*.pt`` files
that ``terramind_register.py`` filters into ``TerraMindViT``), with its raw-data
embeddings, token embeddings of tokenized modalities, decoder and bias-free LayerNorm
buffers. Features must match ``TerraMindViT`` built as terratorch's ``terramind_v1_*``
registrations build it, on one and several modalities, native and other sizes.
"""
import logging
from functools import partial

import pytest
import torch

from helpers import rel_err, terratorch_terramind
from d2geo.encoders import CheckpointError, EncoderInputError, build_encoder, load_encoder_weights
from d2geo.encoders import terramind as tm

TINY = dict(embed_dim=64, depth=3, num_heads=4)
TOL = 1e-4


@pytest.fixture(scope="module")
def ref():
    """terratorch's terramind model package, loaded file by file from the wheel."""
    return terratorch_terramind()


def _arch(ref, **over):
    """The architecture keywords of terratorch's ``terramind_v1_*`` registrations."""
    return dict(encoder_depth=TINY["depth"], dim=TINY["embed_dim"], num_heads=TINY["num_heads"], mlp_ratio=4,
                qkv_bias=False, proj_bias=False, mlp_bias=False, num_register_tokens=0,
                norm_layer=partial(ref.tm_utils.LayerNorm, eps=1e-6, bias=False), act_layer=torch.nn.SiLU,
                gated_mlp=True, **over)


def _randomize(model: torch.nn.Module) -> torch.nn.Module:
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.2 * torch.randn_like(p))
            else:
                p.add_(0.05 * torch.randn_like(p))
    return model.eval()


RAW = ("untok_sen2l2a@224", "untok_sen2l1c@224", "untok_sen2rgb@224", "untok_sen1grd@224",
       "untok_sen1rtc@224", "untok_dem@224")


@pytest.fixture(scope="module")
def published(ref):
    return published_state_dict(ref)


def published_state_dict(ref) -> dict:
    """A random-weight state dict in the layout of the published TerraMind_v1 files."""
    torch.manual_seed(1)
    info = ref.modality_info.MODALITY_INFO
    enc = {k: info[k]["encoder_embedding"](**{**info[k], "image_size": 224}) for k in
           RAW + ("tok_sen2l2a@224", "tok_lulc@224", "coords")}
    dec = {k: info[k]["decoder_embedding"](**{**info[k], "image_size": 224}) for k in
           ("tok_sen2l2a@224", "tok_lulc@224", "coords")}
    arch = _arch(ref)
    arch.pop("num_register_tokens")
    model = ref.terramind.TerraMind(enc, dec, info, decoder_depth=1, **arch)
    _randomize(model)
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    # what the pretraining checkpoint holds besides the raw-data encoder
    assert any(k.startswith("decoder.") for k in sd) and "mask_token" in sd
    assert "encoder_norm.bias" in sd and "encoder.0.norm1.bias" in sd  # zero buffers
    assert "encoder_embeddings.tok_lulc@224.token_emb.weight" in sd
    return sd


def _vit(ref, sd, modalities, **over):
    """terratorch's TerraMindViT loading ``sd`` as build_terrammind_vit does (pretrained=True)."""
    vit = ref.terramind_vit.TerraMindViT(modalities=list(modalities), merge_method=over.pop("merge_method", "mean"),
                                         **_arch(ref, **over))
    own = vit.state_dict()
    clean = {k: v for k, v in sd.items() if k in own}
    if "missing_mod_token" in own:  # 'concat' only: a fine-tuning parameter, not in the published files
        clean["missing_mod_token"] = torch.randn_like(own["missing_mod_token"])
    assert set(own) - set(clean) == set(), set(own) - set(clean)
    vit.load_state_dict(clean, strict=True)
    return vit.eval()


def _upstream_maps(vit, inputs, grid, *, norm, merge="mean"):
    """Upstream per-block maps: raw block outputs (hooks) merged over modalities; with norm, the
    ViT's encoder_norm applied to every block, as terratorch applies it to the last."""
    raw = []
    hooks = [b.register_forward_hook(lambda m, i, o: raw.append(o.clone())) for b in vit.encoder]
    try:
        with torch.no_grad():
            last = vit(dict(inputs))
    finally:
        for h in hooks:
            h.remove()
    M, (h, w) = len(inputs), grid
    maps = []
    for i, tokens in enumerate(raw):
        if norm:
            tokens = vit.encoder_norm(tokens)
        t = tokens.reshape(tokens.shape[0], M, h * w, -1)
        # as TerraMindViT merges its (B, M, N, D) stack of image-modality tokens
        t = {"mean": lambda: t.mean(1), "max": lambda: t.max(1)[0],
             "concat": lambda: torch.cat(t.unbind(1), dim=-1)}[merge]()
        maps.append(t.transpose(1, 2).reshape(t.shape[0], -1, h, w))
    if norm:  # upstream's own last output is the normed, merged last block
        assert rel_err(maps[-1], last[-1].transpose(1, 2).reshape(maps[-1].shape)) < 1e-6
    return maps


def _compare(ours, vit, x, inputs, grid, merge="mean"):
    worst = 0.0
    layers = list(range(ours.depth))
    for norm in (False, True):
        refs = _upstream_maps(vit, inputs, grid, norm=norm, merge=merge)
        with torch.no_grad():
            mine = ours.forward_features(x, layers=layers, norm=norm)
        for i in layers:
            err = rel_err(mine[i], refs[i])
            assert err <= TOL, (norm, i, err)
            worst = max(worst, err)
    logging.getLogger(__name__).info("terramind fidelity: max rel err %.2e", worst)
    return worst


def _inputs(shape, counts):
    return {k: torch.randn(shape[0], c, *shape[1:]) for k, c in counts.items()}


# -- fidelity --------------------------------------------------------------------------------
@pytest.mark.parametrize("hw", [(224, 224), (160, 96), (48, 272)])
def test_single_modality_s2l2a_native_and_other_sizes(ref, published, hw):
    vit = _vit(ref, published, ["S2L2A"])
    ours = build_encoder("terramind_v1_base", weights=published, bands=["S2L2A"], **TINY).eval()
    inputs = _inputs((2, *hw), {"S2L2A": 12})
    _compare(ours, vit, inputs["S2L2A"], inputs, (hw[0] // 16, hw[1] // 16))


@pytest.mark.parametrize("hw", [(224, 224), (96, 160)])
def test_three_modalities_s2l2a_s1rtc_dem(ref, published, hw):
    vit = _vit(ref, published, ["S2L2A", "S1RTC", "DEM"])
    ours = build_encoder("terramind_v1_tiny", weights=published, bands=["S2L2A", "S1RTC", "DEM"], **TINY).eval()
    assert ours.bands[-3:] == ("S1RTC:VV", "S1RTC:VH", "DEM:DEM") and ours.in_chans == 15
    inputs = _inputs((2, *hw), {"S2L2A": 12, "S1RTC": 2, "DEM": 1})
    x = torch.cat(list(inputs.values()), dim=1)
    _compare(ours, vit, x, inputs, (hw[0] // 16, hw[1] // 16))


def test_every_raw_modality_and_max_merge(ref, published):
    names = ["S2L1C", "S2RGB", "S1GRD", "DEM", "S2L2A", "S1RTC"]
    vit = _vit(ref, published, names, merge_method="max")
    ours = build_encoder("terramind_v1_small", weights=published, bands=names, merge="max", **TINY).eval()
    counts = {"S2L1C": 13, "S2RGB": 3, "S1GRD": 2, "DEM": 1, "S2L2A": 12, "S1RTC": 2}
    inputs = _inputs((1, 64, 112), counts)
    _compare(ours, vit, torch.cat(list(inputs.values()), 1), inputs, (4, 7), merge="max")


@pytest.mark.parametrize("hw", [(224, 224), (80, 144)])
def test_concat_merge_matches_terratorch_and_widens_the_maps(ref, published, hw):
    names = ["S2L2A", "S1RTC", "DEM"]
    vit = _vit(ref, published, names, merge_method="concat")
    assert vit.out_channels[0] == 3 * TINY["embed_dim"]
    ours = build_encoder("terramind_v1_base", weights=published, bands=names, merge="concat", **TINY).eval()
    assert ours.feature_dim == vit.out_channels[0] == 3 * ours.embed_dim
    inputs = _inputs((2, *hw), {"S2L2A": 12, "S1RTC": 2, "DEM": 1})
    _compare(ours, vit, torch.cat(list(inputs.values()), 1), inputs, (hw[0] // 16, hw[1] // 16), merge="concat")
    # modality-major channels: the mean of the three D-channel chunks is the 'mean' merge
    mean = build_encoder("terramind_v1_base", weights=published, bands=names, **TINY).eval()
    x = torch.cat(list(inputs.values()), 1)
    with torch.no_grad():
        (cat,), (avg,) = ours.forward_features(x, layers=[1]), mean.forward_features(x, layers=[1])
    assert cat.shape == (2, 3 * 64, hw[0] // 16, hw[1] // 16)
    torch.testing.assert_close(cat.reshape(2, 3, 64, *cat.shape[-2:]).mean(1), avg, rtol=1e-5, atol=1e-5)
    assert ours.forward_features(torch.zeros(0, 15, 32, 48))[0].shape == (0, 192, 2, 3)
    # a terratorch fine-tuned 'concat' TerraMindViT loads; its missing-modality token is named as left out
    report = load_encoder_weights(build_encoder("terramind_v1_base", bands=names, merge="concat", **TINY),
                                  {f"model.encoder.{k}": v for k, v in vit.state_dict().items()})
    assert "missing from its input" in report.ignored["model.encoder.missing_mod_token"]


def test_band_subset_in_another_order_matches_terratorch_band_selection(ref, published):
    """terratorch's select_modality_patch_embed_weights with bands given by name."""
    # (terramind_register.py imports the tokenizers, so its column selection is done here as it does it)
    s2_names = ["COASTAL_AEROSOL", "BLUE", "GREEN", "RED", "RED_EDGE_1", "RED_EDGE_2", "RED_EDGE_3", "NIR_BROAD",
                "NIR_NARROW", "WATER_VAPOR", "SWIR_1", "SWIR_2"]
    pick = ["RED", "GREEN", "BLUE", "NIR_NARROW"]
    vit = _vit(ref, published, ["S2L2A", "S1RTC"])
    # upstream: a new linear patch embedding whose columns are the pretrained bands' columns
    emb = vit.encoder_embeddings["untok_sen2l2a@224"]
    w = emb.proj.weight.detach().view(emb.proj.weight.shape[0], 256, 12)
    emb.proj = torch.nn.Linear(256 * 4, w.shape[0], bias=False)
    emb.proj.weight.data = w[..., [s2_names.index(b) for b in pick]].reshape(w.shape[0], -1).clone()
    ours = build_encoder("terramind_v1_base", weights=published,
                         bands=["S2L2A:B04", "S2L2A:B03", "S2L2A:B02", "S2L2A:B8A", "S1RTC"], **TINY).eval()
    inputs = _inputs((2, 80, 48), {"S2L2A": 4, "S1RTC": 2})
    _compare(ours, vit, torch.cat(list(inputs.values()), 1), inputs, (5, 3))


def test_non_contiguous_modality_channels(ref, published):
    vit = _vit(ref, published, ["S1RTC", "S2RGB"])
    ours = build_encoder("terramind_v1_base", weights=published,
                         bands=["S1RTC:VV", "S2RGB:red", "S2RGB:green", "S1RTC:VH", "S2RGB:blue"], **TINY).eval()
    inputs = _inputs((1, 32, 48), {"S1RTC": 2, "S2RGB": 3})
    s1, rgb = inputs["S1RTC"], inputs["S2RGB"]
    x = torch.cat([s1[:, :1], rgb[:, :2], s1[:, 1:], rgb[:, 2:]], 1)
    _compare(ours, vit, x, inputs, (2, 3))


def test_position_table_equals_upstream(ref):
    for grid in ((14, 14), (6, 10), (20, 3)):
        enc = build_encoder("terramind_v1_tiny", embed_dim=64, depth=1, num_heads=4)
        native = ref.tm_utils.build_2d_sincos_posemb(14, 14, embed_dim=64)
        upstream = native if grid == (14, 14) else ref.tm_utils.interpolate_pos_encoding(
            native.clone(), grid[0] * 16, grid[1] * 16, (16, 16), 64)
        assert rel_err(enc.pos_embed_for(grid, torch.device("cpu"), torch.float32), upstream[0]) < 1e-6


def test_published_checkpoint_tensors_left_out_are_named(published):
    enc = build_encoder("terramind_v1_base", bands=["S2L2A", "DEM"], **TINY)
    report = load_encoder_weights(enc, published)
    reasons = report.ignored
    # nothing dropped silently: every checkpoint tensor is loaded (under its new name) or named
    assert set(reasons) <= set(published) and len(report.loaded) + len(reasons) == len(published)
    assert "patch_embed.DEM.weight" in report.loaded and "blocks.2.mlp.fc1_x.weight" in report.loaded
    assert "decoder" in reasons["mask_token"]
    assert "not built with" in reasons["encoder_embeddings.untok_sen1rtc@224.proj.weight"]
    assert "tokenized" in reasons["encoder_embeddings.tok_lulc@224.token_emb.weight"]
    assert "position table" in reasons["encoder_embeddings.untok_dem@224.pos_emb"]
    assert "bias-free" in reasons["encoder.1.norm2.bias"] and "bias-free" in reasons["encoder_norm.bias"]


def test_terratorch_finetuned_and_d2geo_checkpoints_load(ref, published, tmp_path):
    # a terratorch Lightning checkpoint of a fine-tuned TerraMindViT: under model.encoder.
    vit = _vit(ref, published, ["S2L2A"])
    lightning = {"state_dict": {f"model.encoder.{k}": v for k, v in vit.state_dict().items()},
                 "epoch": 3}
    lightning["state_dict"]["model.decoder.head.weight"] = torch.zeros(2, 2)
    path = tmp_path / "tt.ckpt"
    torch.save(lightning, path)
    a = build_encoder("terramind_v1_base", weights=str(path), bands=["S2L2A"], **TINY).eval()
    b = build_encoder("terramind_v1_base", weights=published, bands=["S2L2A"], **TINY).eval()
    # d2geo's own keys, e.g. a detectron2 model's backbone.net.encoder.
    c = build_encoder("terramind_v1_base", weights={f"backbone.net.encoder.{k}": v for k, v in a.state_dict().items()},
                      bands=["S2L2A"], **TINY).eval()
    x = torch.randn(1, 12, 48, 48)
    with torch.no_grad():
        fa, fb, fc = (e.forward_features(x, layers=[0, 2]) for e in (a, b, c))
    for u, v, w in zip(fa, fb, fc):
        torch.testing.assert_close(u, v, rtol=0, atol=0)
        torch.testing.assert_close(u, w, rtol=0, atol=0)


def test_registered_variants_match_terratorch():
    for name, (d, depth, heads) in {"terramind_v1_tiny": (192, 12, 3), "terramind_v1_small": (384, 12, 6),
                                    "terramind_v1_base": (768, 12, 12), "terramind_v1_large": (1024, 24, 16)}.items():
        enc = build_encoder(name, depth=1) if name != "terramind_v1_large" else None
        if enc is not None:
            assert enc.embed_dim == d and enc.blocks[0].attn.num_heads == heads
            assert enc.blocks[0].mlp.fc1_g.out_features == int(2 * 4 * d / 3)
        from d2geo.encoders import get_encoder_config
        cfg = get_encoder_config(name)
        assert (cfg["embed_dim"], cfg["depth"], cfg["num_heads"]) == (d, depth, heads)


def test_drop_path_rises_linearly():
    enc = build_encoder("terramind_v1_tiny", depth=3, embed_dim=64, num_heads=4, drop_path_rate=0.2)
    rates = [getattr(b.drop_path1, "drop_prob", 0.0) for b in enc.blocks]
    assert rates == pytest.approx([0.0, 0.1, 0.2])


# -- bad inputs ------------------------------------------------------------------------------
def test_unknown_modality_is_refused():
    with pytest.raises(ValueError, match="S2L3A.*TerraMind 1.0 does not have.*S2L2A, S2L1C"):
        build_encoder("terramind_v1_tiny", bands=["S2L3A:B04"], **TINY)


def test_tokenized_and_sequence_modalities_are_refused_naming_the_raw_ones():
    for name in (["LULC"], ["S2L2A", "NDVI"], ["tok_sen2l2a@224:B04"], ["tok_lulc@224"], ["coords"],
                 ["untok_ndvi@224"], ["caption"]):
        with pytest.raises(ValueError, match="tokenized or sequence modalities.*raw-data modalities S2L2A, S2L1C, "
                                             "S2RGB, S1GRD, S1RTC, DEM"):
            build_encoder("terramind_v1_tiny", bands=name, **TINY)
    # the raw-data modalities under terratorch's keys still work
    assert build_encoder("terramind_v1_tiny", bands=["untok_sen1rtc@224"], **TINY).bands == ("S1RTC:VV", "S1RTC:VH")


def test_band_without_modality_is_refused():
    with pytest.raises(ValueError, match="does not say which TerraMind modality.*'S2L2A:B04'"):
        build_encoder("terramind_v1_tiny", bands=["B04", "B03"], **TINY)


def test_band_not_of_its_modality_is_refused():
    with pytest.raises(ValueError, match="S2L2A has no band 'B10'.*use S2L1C"):
        build_encoder("terramind_v1_tiny", bands=["S2L2A:B04", "S2L2A:B10"], **TINY)
    with pytest.raises(ValueError, match="named twice"):
        build_encoder("terramind_v1_tiny", bands=["S1RTC", "S1RTC:VV"], **TINY)


def test_input_with_a_modality_band_count_wrong():
    enc = build_encoder("terramind_v1_tiny", bands=["S2L2A", "S1RTC"], **TINY)
    with pytest.raises(EncoderInputError, match=r"13 channels but the encoder expects 14 \(S2L2A: 12, S1RTC: 2"):
        enc.forward_features(torch.randn(1, 13, 32, 32))


def test_checkpoint_kernel_of_another_band_count(published):
    bad = dict(published)
    w = bad["encoder_embeddings.untok_sen1rtc@224.proj.weight"]
    bad["encoder_embeddings.untok_sen1rtc@224.proj.weight"] = torch.cat([w, w[:, :256]], 1)  # 3 bands
    with pytest.raises(CheckpointError, match="S1RTC patch embedding takes 768 values per patch.*VV, VH"):
        build_encoder("terramind_v1_tiny", weights=bad, bands=["S1RTC"], **TINY)


def test_checkpoint_of_another_architecture(published):
    bad = dict(published)
    bad["encoder.0.norm1.bias"] = torch.ones_like(bad["encoder.0.norm1.bias"])
    with pytest.raises(CheckpointError, match="no bias"):
        build_encoder("terramind_v1_tiny", weights=bad, **TINY)
    bad = dict(published)
    bad["encoder_embeddings.untok_sen2l2a@224.pos_emb"] = bad["encoder_embeddings.untok_sen2l2a@224.pos_emb"] * 2
    with pytest.raises(CheckpointError, match="sine-cosine table"):
        build_encoder("terramind_v1_tiny", weights=bad, **TINY)


def test_other_patch_size_and_merge_are_refused():
    with pytest.raises(ValueError, match="16-pixel patches"):
        build_encoder("terramind_v1_tiny", patch_size=14, **TINY)
    with pytest.raises(ValueError, match="merge='sum' is unknown: use one of 'mean', 'max', 'concat'"):
        build_encoder("terramind_v1_tiny", merge="sum", **TINY)
    for token_sequences in ("dict", None):
        with pytest.raises(ValueError, match="per-modality token sequences.*cannot take: use one of 'mean', 'max', "
                                             "'concat'"):
            build_encoder("terramind_v1_tiny", merge=token_sequences, **TINY)


def test_window_attention_spans_the_modalities_and_a_grid_sized_window_is_global():
    enc = build_encoder("terramind_v1_tiny", bands=["S2RGB", "DEM"], **TINY).eval()
    x = torch.randn(2, 4, 64, 96)
    with torch.no_grad():
        ref = enc.forward_features(x, layers=[0, 2])
        enc.set_window_attention(6, global_blocks=(1,))  # one 4x6 window: the same as global
        same = enc.forward_features(x, layers=[0, 2])
        enc.set_window_attention(2, global_blocks=(2,))
        windowed = enc.forward_features(x, layers=[0, 2])
    for a, b in zip(ref, same):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert windowed[0].shape == ref[0].shape and (windowed[0] - ref[0]).abs().max() > 1e-3


def test_grad_checkpointing_and_empty_batch():
    enc = build_encoder("terramind_v1_tiny", bands=["S1GRD"], **TINY)
    x = torch.randn(1, 2, 32, 32)
    plain = enc.forward_features(x, layers=[2])[0]
    enc.set_grad_checkpointing(True)
    ckpt = enc.forward_features(x, layers=[2])[0]
    torch.testing.assert_close(plain, ckpt)
    ckpt.sum().backward()
    assert enc.patch_embed["S1GRD"].weight.grad.abs().sum() > 0
    assert enc.forward_features(torch.zeros(0, 2, 32, 48))[0].shape == (0, 64, 2, 3)


def test_bands_by_common_name_select_the_kernel_columns_of_their_ids(published):
    enc = build_encoder("terramind_v1_tiny", weights=published, **TINY,
                        bands=["S2L2A:nir_narrow", "S2L2A:nir", "S2L2A:swir16", "S1RTC:vh", "S2RGB:R"])
    assert enc.bands[:2] == ("S2L2A:nir_narrow", "S2L2A:nir")

    def columns(key, n):
        w = published[f"encoder_embeddings.{key}.proj.weight"]
        return w.reshape(w.shape[0], 16, 16, n).permute(0, 3, 1, 2)

    s2 = columns("untok_sen2l2a@224", 12)
    torch.testing.assert_close(enc.patch_embed["S2L2A"].weight, s2[:, [8, 7, 10]], rtol=0, atol=0)  # B8A B08 B11
    torch.testing.assert_close(enc.patch_embed["S1RTC"].weight, columns("untok_sen1rtc@224", 2)[:, [1]], rtol=0, atol=0)
    torch.testing.assert_close(enc.patch_embed["S2RGB"].weight, columns("untok_sen2rgb@224", 3)[:, [0]], rtol=0, atol=0)
    with pytest.raises(ValueError, match="S2RGB has no band 'nir'"):
        build_encoder("terramind_v1_tiny", bands=["S2RGB:nir"], **TINY)
