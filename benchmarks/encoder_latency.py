"""Section ``encoders``: forward latency of each family against its upstream implementation."""
from __future__ import annotations

import torch

from testkit import rel_err
from testkit.upstream import (anysat_official, claymodel, galileo_single_file, olmoearth_official, panopticon_official, terratorch_prithvi, terratorch_terramind, torchgeo_copernicusfm,
                              torchgeo_croma, torchgeo_dofa, torchgeo_scale_mae)

from .common import Profile, count_flops, logger, smooth_image, time_interleaved


def _encoder_pair(row: dict):
    """(ours_fn, upstream_fn, to_ref_map(upstream_out) -> map like ours, input description, tokens)."""
    import timm

    from d2geo.encoders import build_encoder

    torch.manual_seed(0)
    size, arch, family = row["size"], row["arch"], row["family"]
    if family in ("dinov2", "dinov3"):
        ours = build_encoder(row["ours"], img_size=size, **arch).eval()
        ref = timm.create_model(row["timm"], pretrained=False, num_classes=0, global_pool="", img_size=size,
                                dynamic_img_size=True, **arch).eval()
        weights = ours.vit.state_dict()
        weights.pop("rope.periods", None)  # DINOv3: ours keeps the checkpoint's; timm computes them
        ref.load_state_dict(weights, strict=True)
        x = smooth_image((1, 3, size, size))
        g = size // ours.patch_size
        P = ours.num_prefix_tokens

        def to_map(t):
            return t[:, P:].reshape(1, g, g, -1).permute(0, 3, 1, 2)

        return (lambda: ours(x)), (lambda: ref.forward_features(x)), to_map, f"3x{size}x{size}", g * g
    if family == "prithvi":
        frames = row["frames"]
        mod = terratorch_prithvi()
        ref = mod.PrithviViT(img_size=size, patch_size=(1, 16, 16), num_frames=frames, in_chans=6,
                             mlp_ratio=4.0, **arch).eval()
        ours = build_encoder(row["ours"], weights=ref.state_dict(), img_size=size, num_frames=frames,
                             **arch).eval()
        x = smooth_image((1, 6, frames, size, size))
        g = size // 16

        def to_map(t):
            return t[:, 1:].reshape(1, frames, g, g, -1).permute(0, 4, 1, 2, 3)

        return ((lambda: ours(x)), (lambda: ref.forward_features(x)[-1]), to_map,
                f"6x{frames}x{size}x{size}", frames * g * g)
    if family == "clay":
        mod = claymodel()
        ref = mod.Encoder(mask_ratio=0.0, patch_size=8, shuffle=False, dim=arch["embed_dim"], depth=arch["depth"],
                          heads=arch["num_heads"], dim_head=arch["head_dim"], mlp_ratio=4.0).eval()
        sd = {f"model.encoder.{k}": v for k, v in ref.state_dict().items()}
        ours = build_encoder(row["ours"], weights={"state_dict": sd}, **arch).eval()
        waves = torch.tensor([0.65, 0.56, 0.48, 0.842])  # NAIP red, green, blue, nir
        x = smooth_image((1, 4, size, size))
        meta = {"wavelengths": waves, "gsd": torch.tensor([1.0])}  # no time/location: zeros, as upstream's
        cube = {"pixels": x, "time": torch.zeros(1, 4), "latlon": torch.zeros(1, 4), "gsd": torch.tensor(1.0),
                "waves": waves}
        g = size // 8

        def to_map(t):
            return t[:, 1:].reshape(1, g, g, -1).permute(0, 3, 1, 2)

        return ((lambda: ours(x, metadata=meta)), (lambda: ref(cube)[0]), to_map, f"4x{size}x{size}", g * g)
    if family == "ssl4eo":  # torchgeo's vit_small_patch16_224: timm's model with 13 bands
        ours = build_encoder(row["ours"], **{"img_size": size, **arch}).eval()
        ref = timm.create_model("vit_small_patch16_224", in_chans=13, num_classes=0, global_pool="",
                                dynamic_img_size=True, **{"img_size": size, **arch}).eval()
        ref.load_state_dict({k[len("vit."):]: v for k, v in ours.state_dict().items() if k.startswith("vit.")}, strict=True)
        x = smooth_image((1, 13, size, size))
        g = size // 16

        def to_map(t):
            return t[:, 1:].reshape(1, g, g, -1).permute(0, 3, 1, 2)

        return (lambda: ours(x)), (lambda: ref.forward_features(x)), to_map, f"13x{size}x{size}", g * g
    if family == "ssl4eo_data2vec":
        # the official module (SSL4EO-S12 modeling_finetune.py) is in no wheel: the reference is
        # timm's Beit, which d2geo wraps and which tests/encoders/test_ssl4eo_data2vec.py checks
        # against the official outputs; here a separate timm Beit in the published configuration
        from timm.models.beit import Beit

        ours = build_encoder(row["ours"], **{"img_size": size, **arch}).eval()
        dims = {k: v for k, v in arch.items() if k != "img_size"} or dict(embed_dim=384, depth=12, num_heads=6)
        ref = Beit(img_size=size, patch_size=16, in_chans=13, num_classes=0, global_pool="", qkv_bias=True,
                   init_values=0.1, use_abs_pos_emb=False, use_shared_rel_pos_bias=True, use_fc_norm=False,
                   **dims).eval()
        ref.load_state_dict({k[len("beit."):]: v for k, v in ours.state_dict().items() if k.startswith("beit.")}, strict=True)
        x = smooth_image((1, 13, size, size))
        g = size // 16

        def to_map(t):
            return t[:, 1:].reshape(1, g, g, -1).permute(0, 3, 1, 2)

        return (lambda: ours(x)), (lambda: ref.forward_features(x)), to_map, f"13x{size}x{size}", g * g
    if family == "scalemae":
        from functools import partial

        mod = torchgeo_scale_mae()
        dims = {k: v for k, v in arch.items() if k != "img_size"} or dict(embed_dim=1024, depth=24, num_heads=16)
        ref = mod.ScaleMAE(res=1.0, img_size=size, patch_size=16, mlp_ratio=4, qkv_bias=True,
                           norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), **dims).eval()
        ours = build_encoder(row["ours"], weights=ref.state_dict(), **{"img_size": size, **arch}).eval()
        x = smooth_image((1, 3, size, size))
        meta = {"gsd": torch.tensor([1.0])}
        g = size // 16

        def to_map(t):
            return t[:, 1:].reshape(1, g, g, -1).permute(0, 3, 1, 2)

        return ((lambda: ours(x, metadata=meta)), (lambda: ref.forward_features(x)), to_map,
                f"3x{size}x{size}", g * g)
    if family == "satlas":  # torchgeo's swin_v2_b: torchvision's Swin-V2 with a 9-band first conv
        import torchvision
        from torchvision.models.swin_transformer import PatchMergingV2, SwinTransformerBlockV2

        ours = build_encoder(row["ours"], **arch).eval()
        if arch:
            ref = torchvision.models.SwinTransformer(
                patch_size=[4, 4], embed_dim=arch["embed_dim"], depths=list(arch["depths"]),
                num_heads=list(arch["num_heads"]), window_size=[8, 8], block=SwinTransformerBlockV2,
                downsample_layer=PatchMergingV2)
        else:
            ref = torchvision.models.swin_v2_b(weights=None)
        ref.features[0][0] = torch.nn.Conv2d(9, ref.features[0][0].out_channels, kernel_size=4, stride=4)
        ref.load_state_dict(ours.state_dict(), strict=False)
        ref.eval()
        x = smooth_image((1, 9, size, size))

        def ref_fn():  # the last stage, normed, as torchvision's forward computes it before pooling
            return ref.norm(ref.features(x))

        return ((lambda: ours(x)), ref_fn, (lambda t: t.permute(0, 3, 1, 2)), f"9x{size}x{size}",
                (size // 4) ** 2)
    if family == "dofa":  # upstream pools; its dense path (patch_embed, table, blocks) is timed
        mod = torchgeo_dofa()
        ref = mod.DOFA(img_size=size, patch_size=16, **arch).eval()
        ours = build_encoder(row["ours"], weights=ref.state_dict(), img_size=size, **arch).eval()
        waves = [0.665, 0.56, 0.493, 0.842]
        x = smooth_image((1, 4, size, size))
        g = size // 16

        def ref_fn():
            t, _ = ref.patch_embed(x, torch.tensor(waves, device=x.device))
            t = torch.cat([ref.cls_token + ref.pos_embed[:, :1], t + ref.pos_embed[:, 1:]], dim=1)
            for blk in ref.blocks:
                t = blk(t)
            return t

        def to_map(t):
            return t[:, 1:].reshape(1, g, g, -1).permute(0, 3, 1, 2)

        return ((lambda: ours.forward_features(x, layers=-1, norm=False, metadata={"wavelengths": waves})[0]),
                ref_fn, to_map, f"4x{size}x{size}", g * g)
    if family == "copernicusfm":  # upstream pools: its whole forward runs, its last block output is taken
        from functools import partial

        mod = torchgeo_copernicusfm()
        ref = mod.CopernicusFM(img_size=size, patch_size=16, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
                               **arch).eval()
        bands = ("B04", "B03", "B02", "B08")
        ours = build_encoder(row["ours"], weights=ref.state_dict(), img_size=size, bands=bands, **arch).eval()
        waves_nm, bws_nm = [665.0, 560.0, 490.0, 842.0], [30.0, 35.0, 65.0, 115.0]  # its pretraining spectrum
        x = smooth_image((1, 4, size, size))
        seconds, latlon = 1.6e9, torch.tensor([[47.5, 8.2]])
        meta = {"latlon": latlon, "gsd": torch.tensor([10.0]),
                "timestamps": torch.tensor([[seconds]], dtype=torch.float64)}
        # upstream's (lon, lat, days since 1970, km^2 per patch), from the same float32 lat/lon
        ref_meta = torch.tensor([[0.0, 0.0, seconds / 86400, (10.0 * 16 / 1000) ** 2]], dtype=torch.float64)
        ref_meta[0, :2] = latlon[0].flip(0).double()
        taken = {}
        ref.blocks[-1].register_forward_hook(lambda m, i, o: taken.__setitem__("t", o))
        g = size // 16

        def ref_fn():
            ref.forward_features(x, ref_meta, wavelengths=waves_nm, bandwidths=bws_nm)
            return taken.pop("t")

        def to_map(t):
            return t[:, 1:].reshape(1, g, g, -1).permute(0, 3, 1, 2)

        return ((lambda: ours.forward_features(x, layers=-1, norm=False, metadata=meta)[0]),
                ref_fn, to_map, f"4x{size}x{size}", g * g)
    if family == "terramind":
        from functools import partial

        mod = terratorch_terramind()
        mods = list(row["modalities"])
        ref = mod.terramind_vit.TerraMindViT(
            modalities=mods, merge_method="mean", dim=arch["embed_dim"], encoder_depth=arch["depth"],
            num_heads=arch["num_heads"], mlp_ratio=4, qkv_bias=False, proj_bias=False, mlp_bias=False,
            norm_layer=partial(mod.tm_utils.LayerNorm, eps=1e-6, bias=False), act_layer=torch.nn.SiLU,
            gated_mlp=True).eval()
        ours = build_encoder(row["ours"], weights=ref.state_dict(), bands=mods, **arch).eval()
        chans = [len(ours._channels[m]) for m in mods]
        x = smooth_image((1, sum(chans), size, size))
        inputs = dict(zip(mods, torch.split(x, chans, dim=1)))
        g = size // 16

        def to_map(t):
            return t.reshape(1, g, g, -1).permute(0, 3, 1, 2)

        return ((lambda: ours(x)), (lambda: ref(dict(inputs))[-1]), to_map,
                f"{'+'.join(mods)} {sum(chans)}x{size}x{size}", len(mods) * g * g)
    if family == "croma":  # the joint encoder: both ViTs, then the cross-attention blocks
        mod = torchgeo_croma()
        dims = arch or dict(embed_dim=768, depth=12, num_heads=16)
        ref = mod.CROMA(modalities=["sar", "optical"], encoder_dim=dims["embed_dim"], encoder_depth=dims["depth"],
                        num_heads=dims["num_heads"], image_size=size).eval()
        weights = {k: getattr(ref, k).state_dict() for k in ("s1_encoder", "s2_encoder", "joint_encoder")}
        ours = build_encoder(row["ours"], weights=weights, modality="joint", **arch).eval()
        x = smooth_image((1, 14, size, size))
        s2, s1 = x[:, :12], x[:, 12:]
        g = size // 8

        def to_map(t):
            return t.reshape(1, g, g, -1).permute(0, 3, 1, 2)

        return ((lambda: ours(x)), (lambda: ref(x_sar=s1, x_optical=s2)["joint_encodings"]), to_map,
                f"14x{size}x{size}", g * g)
    if family == "panopticon":  # the publishers' DinoVisionTransformer with PanopticonPE (hubconf settings)
        from functools import partial

        mod = panopticon_official()
        from dinov2.layers import MemEffAttention, NestedTensorBlock

        dims = arch or dict(embed_dim=768, depth=12, num_heads=12)
        attn_dim = row.get("attn_dim", 2304)
        pe = dict(attn_dim=attn_dim, chnfus_cfg=dict(attn_cfg=dict(num_heads=16)))  # upstream pops attn_dim
        ref = mod.DinoVisionTransformer(img_size=518, patch_size=14, init_values=1e-5, ffn_layer="mlp",
                                        block_chunks=0, block_fn=partial(NestedTensorBlock, attn_class=MemEffAttention),
                                        embed_layer="PanopticonPE", pe_args=pe, **dims).eval()
        # the FLOP counter's module hooks trip over its no-grad views of the query parameter
        ref.requires_grad_(False)
        bands = ("B04", "B03", "B02", "B08", "VV", "VH")
        ours = build_encoder(row["ours"], weights=ref.state_dict(), bands=bands, attn_dim=attn_dim,
                             **dims).eval()
        ids = torch.tensor([ours.default_ids], dtype=torch.float64)
        x = smooth_image((1, len(bands), size, size))
        g = size // 14

        def to_map(t):
            return t.reshape(1, g, g, -1).permute(0, 3, 1, 2)

        def ref_fn():  # the official patch embedding floors the ids in place: a copy per call
            return ref.get_intermediate_layers({"imgs": x, "chn_ids": ids.clone()}, n=1, norm=True)[0]

        return (lambda: ours(x)), ref_fn, to_map, f"{len(bands)}x{size}x{size}", g * g
    if family == "galileo":  # Sentinel-2 + Sentinel-1 groups; upstream masks (removes) the other inputs
        return _galileo_pair(row)
    if family == "anysat":  # the publishers' hub model (flash_attn=False), a Sentinel-2 time series
        hub = anysat_official()
        dims = arch or dict(embed_dim=768, depth=6, num_heads=12)
        cfg = hub.get_default_config("base")
        D = dims["embed_dim"]
        cfg.update(embed_dim=D, depth=dims["depth"], num_heads=dims["num_heads"], modalities={"all": ["s2"]})
        cfg["spatial_encoder"].update(embed_dim=D, depth=dims["depth"], num_heads=dims["num_heads"],
                                      modalities={"all": ["s2"]})
        cfg["projectors"] = {"s2": dict(cfg["projectors"]["s2"], mlp=[D], mlp_in=[D // 8, D // 2, D, 2 * D, D])}
        real = hub.get_default_config
        hub.get_default_config = lambda size="base": cfg
        try:
            ref = hub.AnySat(model_size="base", flash_attn=False).eval()
        finally:
            hub.get_default_config = real
        frames, patch_m = row["frames"], row["patch_size_m"]
        ours = build_encoder(row["ours"], weights=ref.model.state_dict(), patch_size_m=patch_m, **dims).eval()
        x = smooth_image((1, 10, frames, size, size))
        doy = torch.linspace(10, 300, frames).round()[None]
        meta = {"gsd": 10.0, "timestamps": (1609502400.0 + doy.double() * 86400)}  # 2021-01-01 12:00 UTC + days
        data = {"s2": x.permute(0, 2, 1, 3, 4).contiguous(), "s2_dates": doy}
        g = size // (patch_m // 10)

        def to_map(t):
            return t.permute(0, 3, 1, 2)

        return ((lambda: ours(x, metadata=meta)), (lambda: ref(data, patch_size=patch_m, output="patch")), to_map,
                f"10x{frames}x{size}x{size} ({patch_m} m patches)", g * g)
    if family == "olmoearth":  # Ai2's flexi_vit.Encoder, v1 layout, Sentinel-2 L2A, one date
        mod = olmoearth_official()
        from olmoearth_pretrain.datatypes import MaskedOlmoEarthSample, MaskValue

        dims = arch or dict(embed_dim=768, depth=12, num_heads=12)
        ref = mod.EncoderConfig(supported_modality_names=["sentinel2_l2a"], embedding_size=dims["embed_dim"],
                                depth=dims["depth"], num_heads=dims["num_heads"], mlp_ratio=4.0, max_patch_size=8,
                                drop_path=0.0, use_linear_patch_embed=False,
                                random_channel_embeddings=True).build().eval()
        ours = build_encoder(row["ours"], weights={f"encoder.{k}": v for k, v in ref.state_dict().items()},
                             **dims).eval()
        x = smooth_image((1, 12, size, size))
        ts = torch.tensor([[[15, 5, 2021]]])  # day, month index, year
        sample = MaskedOlmoEarthSample(timestamps=ts, sentinel2_l2a=x.permute(0, 2, 3, 1)[:, :, :, None],
                                       sentinel2_l2a_mask=torch.full((1, size, size, 1, 3),
                                                                     MaskValue.ONLINE_ENCODER.value))
        meta = {"timestamps": torch.tensor([[1623715200.0]], dtype=torch.float64), "gsd": torch.tensor([10.0])}
        g = size // 8

        def to_map(t):  # (1, h, w, t, groups, D): the groups averaged, as ours
            return t[:, :, :, 0].mean(3).permute(0, 3, 1, 2)

        def ref_fn():
            return ref(sample, patch_size=8, input_res=10, fast_pass=True)["tokens_and_masks"].sentinel2_l2a

        return (lambda: ours(x, metadata=meta)), ref_fn, to_map, f"12x{size}x{size}", 3 * g * g
    raise ValueError(f"unknown family {family}")


def _galileo_pair(row: dict):
    from d2geo.encoders import build_encoder
    from d2geo.encoders.galileo import GALILEO_BANDS

    mod = galileo_single_file()
    size, frames, arch = row["size"], row["frames"], row["arch"]
    ref = mod.Encoder(embedding_size=arch["embed_dim"], depth=arch["depth"], num_heads=arch["num_heads"],
                      mlp_ratio=4, max_sequence_length=24, max_patch_size=8).eval()
    ours = build_encoder(row["ours"], weights=ref.state_dict(), bands=list(GALILEO_BANDS), num_frames=frames,
                         **arch).eval()
    x = smooth_image((1, 12, frames, size, size))
    order = [2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 0, 1]  # ours (S2 then S1) in upstream's 13-band order
    s_t_x = torch.zeros(1, size, size, frames, 13)
    s_t_x[..., order] = x.permute(0, 3, 4, 2, 1)
    s_t_m = torch.zeros(1, size, size, frames, 7)
    s_t_m[..., 6] = 1  # no NDVI
    rest = (torch.zeros(1, size, size, 16), torch.zeros(1, frames, 6), torch.zeros(1, 18))
    masks = (torch.ones(1, size, size, 3), torch.ones(1, frames, 3), torch.ones(1, 4))
    months = torch.arange(frames)[None] % 12
    # 2021-01-01 and every 31 days after: months 0, 1, 2, ... as upstream's ``months``
    stamps = torch.tensor([[1.6094592e9 + 2678400.0 * t for t in range(frames)]], dtype=torch.float64)
    meta = {"timestamps": stamps, "gsd": torch.tensor([10.0])}
    g = size // 8

    def ref_fn():
        return ref(s_t_x, *rest, s_t_m, *masks, months, patch_size=8)[0]

    def to_map(t):  # (1, h, w, T, 7, D): the six present groups' mean per date
        return t[..., :6, :].mean(dim=-2).permute(0, 4, 3, 1, 2)

    return ((lambda: ours(x, metadata=meta)), ref_fn, to_map, f"S2 10 + S1 2 x{frames}x{size}x{size}",
            frames * 6 * g * g)


def bench_encoders(profile: Profile, gemm: dict | None, families: set[str] | None) -> list[dict]:
    rows = []
    for row in profile.encoders:
        if families and row["family"] not in families:
            continue
        out = dict(family=row["family"], label=row["label"], gemm_target=row.get("gemm_target", False))
        logger.info("encoder %s ...", row["label"])
        try:
            ours_fn, ref_fn, to_map, shape, tokens = _encoder_pair(row)
        except Exception as e:  # an unavailable reference must not sink the whole run
            out["error"] = f"not measured: {type(e).__name__}: {e}"
            logger.warning("%s: %s", row["label"], out["error"])
            rows.append(out)
            continue
        with torch.inference_mode():
            err = rel_err(ours_fn(), to_map(ref_fn()))
            t = time_interleaved({"ours": ours_fn, "ref": ref_fn}, reps=profile.reps, warmup=profile.warmup)
        flops = count_flops(ours_fn)
        ref_flops = count_flops(ref_fn)
        out.update(input=shape, tokens=tokens, gflop=flops / 1e9, ref_gflop=ref_flops / 1e9,
                   ours_s=t["ours"], ref_s=t["ref"], ratio=t["ours"] / t["ref"], rel_err=err)
        if gemm:
            out["ours_gemm_frac"] = flops / t["ours"] / gemm["flops_per_s"]
            out["ref_gemm_frac"] = ref_flops / t["ref"] / gemm["flops_per_s"]
        rows.append(out)
    return rows
