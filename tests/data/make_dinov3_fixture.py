"""Regenerate tests/data/dinov3_official_tiny.pt from the official DINOv3 code.

The official implementation (facebookresearch/dinov3) is the reference: its attention
adds q and v biases (the k bias is masked by ``qkv.bias_mask``), and its rotary
embedding uses the ``rope_embed.periods`` stored in the checkpoint (bfloat16 in the
published files). This script reads each variant's configuration from the official hub
functions (``dinov3.hub.backbones``), builds it with small widths and depths and random
weights (non-zero q, k and v biases, layer scales well away from their init), and
stores, per variant:

* ``config``: the small sizes used, ``state_dict``: the official-layout state dict,
* ``cases``: the official ``get_intermediate_layers`` outputs of every block, with and
  without the final norm, for the inputs ``formula_input`` builds (native 224 px and non-square ``sizes``);
* ``real_keys``: ``(name, shape)`` of every tensor of the real-size official model's
  state dict (built on the meta device), for the structural check at real size.

It also stores ``real_formula``: the official real-size ViT-L/16 SAT-493M model run with
weights from a deterministic integer hash (``formula_weights`` below, which the tests
reproduce bit for bit), so the real-size architecture is checked numerically without
storing 300M weights.

    git clone <dinov3 repo> /tmp/dinov3
    python tests/data/make_dinov3_fixture.py /tmp/dinov3
"""
import sys

import torch

TINY = {  # embed_dim, num_heads, depth per variant (small, so that the file stays small)
    "vits16": dict(embed_dim=24, num_heads=2, depth=3),
    "vitb16": dict(embed_dim=32, num_heads=2, depth=2),
    "vitl16": dict(embed_dim=24, num_heads=2, depth=3),
    "vitl16_sat": dict(embed_dim=24, num_heads=2, depth=3),
}
SIZES = [(224, 224), (96, 160), (48, 32)]
REAL_SIZES = [(32, 96)]
REAL_LAYERS = [11, 23]


def hash_uniform(shape, seed):
    """Values in [-1, 1) from an integer hash of the element index and ``seed``: the same
    numbers on every platform and torch version (no random generator involved)."""
    n = 1
    for s in shape:
        n *= s
    i = torch.arange(n, dtype=torch.int64) + seed * 1_000_003
    h = (i * 2654435761) % 4294967296
    h = h ^ (h >> 13)
    h = (h * 1274126177) % 4294967296
    h = h ^ (h >> 16)
    return ((h % 65536).to(torch.float32) / 32768.0 - 1.0).reshape(shape)


def formula_input(shape, seed):
    """A test image: hash values, scaled to roughly unit variance."""
    return hash_uniform(shape, 10_000 + seed) * 1.7


def formula_weights(shapes, seed=0):
    """Deterministic pseudo-random weights from an integer hash (exact on every platform).

    ``shapes`` is a list of ``(name, shape)``; values are uniform in [-1, 1) scaled per
    kind of tensor so that a deep random ViT stays well conditioned.
    """
    out = {}
    for j, (name, shape) in enumerate(shapes):
        n = 1
        for s in shape:
            n *= s
        u = hash_uniform(shape, (j + 1) + 1000 * seed)
        if name.endswith("bias_mask"):
            o = shape[0]
            v = torch.ones(shape)
            v[o // 3: 2 * o // 3] = 0
        elif name.endswith("periods"):
            d = shape[0]
            v = (100.0 ** (2 * torch.arange(d, dtype=torch.float32) / (2 * d))).to(torch.bfloat16)
        elif name.endswith("gamma"):
            v = 0.3 + 0.2 * u
        elif "norm" in name and name.endswith("weight"):
            v = 1.0 + 0.2 * u
        elif len(shape) >= 2 and name.endswith("weight"):
            fan_in = n // shape[0]
            v = u * (3.0 / fan_in) ** 0.5
        elif name.endswith("bias"):
            v = 0.2 * u
        else:  # tokens
            v = 0.5 * u
        out[name] = v
    return out


def _hub_kwargs(fn, **hub_args):
    """The DinoVisionTransformer kwargs an official hub function builds its model with."""
    import dinov3.hub.backbones as backbones
    import dinov3.models.vision_transformer as vt

    captured = {}

    class _Capture(Exception):
        pass

    real = vt.DinoVisionTransformer

    def fake(**kwargs):
        captured.update(kwargs)
        raise _Capture

    vt.DinoVisionTransformer = fake
    try:
        getattr(backbones, fn)(pretrained=False, **hub_args)
    except _Capture:
        pass
    finally:
        vt.DinoVisionTransformer = real
    return captured


def main(checkout: str) -> None:
    sys.path.insert(0, checkout)
    from dinov3.hub.backbones import Weights
    from dinov3.models.vision_transformer import DinoVisionTransformer

    torch.manual_seed(0)
    # inputs are not stored: formula_input rebuilds them exactly
    inputs = [formula_input((1, 3, h, w), i) for i, (h, w) in enumerate(SIZES)]
    out = {"sizes": SIZES, "variants": {}}
    for name, tiny in TINY.items():
        fn = "dinov3_" + name.replace("_sat", "")
        hub_args = {"weights": Weights.SAT493M} if name.endswith("_sat") else {}
        kwargs = _hub_kwargs(fn, **hub_args)
        real = DinoVisionTransformer(**dict(kwargs, device="meta"))
        real_keys = [(k, tuple(v.shape)) for k, v in real.state_dict().items()]
        model = DinoVisionTransformer(**dict(kwargs, **tiny))
        model.init_weights()
        with torch.no_grad():
            for k, p in model.named_parameters():
                if k.endswith("gamma"):
                    p.uniform_(0.1, 0.6)
                elif "norm" in k:
                    p.add_(torch.randn_like(p) * 0.2)
                elif p.ndim >= 2 and k.endswith("weight"):
                    p.normal_(0, p[0].numel() ** -0.5)
                else:  # biases (q, k and v parts of qkv.bias all non-zero), tokens
                    p.normal_(0, 0.3)
        sd = {k: v.clone() for k, v in model.state_dict().items()}
        # the published checkpoints store the rope periods in bfloat16
        sd["rope_embed.periods"] = sd["rope_embed.periods"].to(torch.bfloat16)
        model.load_state_dict(sd, strict=True)
        model.eval()
        assert all(torch.count_nonzero(v) for k, v in sd.items() if k.endswith("qkv.bias"))
        cases = []
        for x in inputs:
            with torch.no_grad():
                feats = {norm: [f.clone() for f in model.get_intermediate_layers(
                    x, n=list(range(tiny["depth"])), reshape=True, norm=norm)] for norm in (True, False)}
            cases.append({"norm": feats[True], "prenorm": feats[False]})
        out["variants"][name] = {"hub_kwargs": {k: v for k, v in kwargs.items() if k != "device"},
                                 "config": tiny, "state_dict": sd, "cases": cases,
                                 "real_keys": real_keys}

    # real-size ViT-L/16 SAT-493M with formula weights
    kwargs = _hub_kwargs("dinov3_vitl16", weights=Weights.SAT493M)
    model = DinoVisionTransformer(**kwargs)
    shapes = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    model.load_state_dict(formula_weights(shapes), strict=True)
    model.eval()
    inputs = [formula_input((1, 3, h, w), 100 + i) for i, (h, w) in enumerate(REAL_SIZES)]
    cases = []
    for x in inputs:
        with torch.no_grad():
            feats = {norm: [f.clone() for f in model.get_intermediate_layers(
                x, n=REAL_LAYERS, reshape=True, norm=norm)] for norm in (True, False)}
        cases.append({"norm": feats[True], "prenorm": feats[False]})
    out["real_formula"] = {"variant": "vitl16_sat", "sizes": REAL_SIZES, "layers": REAL_LAYERS,
                           "cases": cases}
    torch.save(out, "tests/data/dinov3_official_tiny.pt")


if __name__ == "__main__":
    main(sys.argv[1])
