"""Regenerate tests/data/dinov2_official_tiny.pt from the official DINOv2 code.

The official implementation (facebookresearch/dinov2) is the reference for how DINOv2
resizes its position embeddings; timm differs for the register-free models. This script
runs a tiny official model with random weights and stores, for each variant, the state
dict in the official hub format, the inputs and the official intermediate features.

    python tests/data/make_dinov2_fixture.py /path/to/dinov2-checkout
"""
import sys

import torch


def main(checkout: str) -> None:
    sys.path.insert(0, checkout)
    from dinov2.models.vision_transformer import DinoVisionTransformer
    from functools import partial
    from dinov2.layers import MemEffAttention, NestedTensorBlock as Block

    torch.manual_seed(0)
    out = {"config": dict(embed_dim=48, depth=3, num_heads=3, patch_size=14, img_size=98)}
    sizes = [(98, 98), (84, 126), (126, 70)]
    inputs = [torch.randn(1, 3, h, w) for h, w in sizes]
    out["inputs"] = inputs
    for name, extra in {
        "plain": dict(num_register_tokens=0, interpolate_antialias=False, interpolate_offset=0.1),
        "reg": dict(num_register_tokens=4, interpolate_antialias=True, interpolate_offset=0.0),
    }.items():
        model = DinoVisionTransformer(
            img_size=98, patch_size=14, embed_dim=48, depth=3, num_heads=3, mlp_ratio=4,
            block_fn=partial(Block, attn_class=MemEffAttention), init_values=1.0,
            ffn_layer="mlp", block_chunks=0, **extra).eval()
        # give every parameter non-trivial values (the official init leaves some at zero)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.05)
        entry = {"state_dict": model.state_dict(), "cases": []}
        for x in inputs:
            with torch.no_grad():
                feats = {
                    norm: [f.clone() for f in model.get_intermediate_layers(
                        x, n=[0, 1, 2], reshape=True, norm=norm)]
                    for norm in (True, False)
                }
            entry["cases"].append({"norm": feats[True], "prenorm": feats[False]})
        out[name] = entry
    torch.save(out, "tests/data/dinov2_official_tiny.pt")


if __name__ == "__main__":
    main(sys.argv[1])
