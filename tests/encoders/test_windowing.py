"""Window attention (d2geo.encoders.windowing) on every encoder family.

The reference for a windowed block is the same block run with ordinary (global)
attention on each window's tokens alone: that is what window attention means, and it
does not go through the partitioning code under test.
"""
from __future__ import annotations

import pytest
import torch

from d2geo.encoders import build_encoder
from d2geo.encoders.windowing import WindowLayout, block_runner, windowed_blocks

GRID = (7, 9)  # token rows, cols: windows of 4 leave partial windows on both axes
WS = 4

#: the families' test variants at three blocks (Prithvi: v2 without time and location codes)
FAMILIES = {
    "dinov2_reg": dict(name="dinov2_test", kw=dict(depth=3), patch=14, chans=3, frames=0),
    "dinov3": dict(name="dinov3_test", kw=dict(depth=3), patch=16, chans=3, frames=0),
    "prithvi": dict(name="prithvi_eo_v2_300", kw=dict(embed_dim=64, depth=3, num_heads=2, num_frames=2),
                    patch=16, chans=6, frames=2),
    "clay": dict(name="clay_test", kw=dict(depth=3, wavelengths=[0.49, 0.56, 0.665], gsd=10.0),
                 patch=8, chans=3, frames=0),
    "panopticon": dict(name="panopticon_test", kw=dict(depth=3, bands=["B04", "B03", "VV"]),
                       patch=14, chans=3, frames=0),
}


def _make(family: str):
    spec = FAMILIES[family]
    enc = build_encoder(spec["name"], **spec["kw"]).eval()
    with torch.no_grad():
        for name, p in enc.named_parameters():
            # DINO layer scales start at 1e-5, which would hide what attention does
            if name.endswith(("ls1.gamma", "ls2.gamma", "gamma_1", "gamma_2")):
                p.fill_(1.0)
    h, w = (g * spec["patch"] for g in GRID)
    shape = (2, spec["chans"], spec["frames"], h, w) if spec["frames"] else (2, spec["chans"], h, w)
    return enc, torch.randn(shape)


def _feats(enc, x, layers):
    with torch.no_grad():
        return enc.forward_features(x, layers=layers, norm=False)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_one_window_is_global_attention(family):
    enc, x = _make(family)
    ref = _feats(enc, x, [0, 1, 2])
    for ws in (max(GRID), 50, GRID):
        enc.set_window_attention(ws, global_blocks=(1,))
        assert windowed_blocks(enc) == [0, 2]
        for a, b in zip(_feats(enc, x, [0, 1, 2]), ref):
            assert torch.equal(a, b)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_windowed_block_equals_attention_within_each_window(family):
    enc, x = _make(family)
    enc.set_window_attention(WS)
    P = enc.num_prefix_tokens
    with torch.no_grad():
        tokens, grid, ctx = enc._embed(enc.check_input(x), None)
        assert tuple(grid[-2:]) == GRID
        block = enc.get_blocks()[0]
        out = block_runner(enc, 0, grid)(block, tokens, ctx)
        glob = enc._run_block(block, tokens, ctx)
        frames = grid[0] if len(grid) == 3 else 1
        index = torch.arange(frames * GRID[0] * GRID[1]).reshape(frames, *GRID)
        checked = 0
        for r in range(0, GRID[0], WS):
            for c in range(0, GRID[1], WS):
                idx = index[:, r:r + WS, c:c + WS].flatten()
                sub = torch.cat([tokens[:, :P], tokens[:, P + idx]], dim=1)
                sub_ctx = ctx[idx] if torch.is_tensor(ctx) else ctx  # DINOv3's rotary table
                ref = enc._run_block(block, sub, sub_ctx)[:, P:]
                got = out[:, P + idx]
                err = ((got - ref).abs().max() / ref.abs().max()).item()
                assert err < 1e-5, (r, c, err)
                checked += idx.numel()
        assert checked == frames * GRID[0] * GRID[1]
        # ... and the windows matter: global attention gives something else
        assert ((glob[:, P:] - out[:, P:]).abs().max() / glob.abs().max()).item() > 1e-3


def test_prefix_tokens_average_the_windows_weighted_by_real_tokens():
    enc, x = _make("dinov2_reg")
    enc.set_window_attention(WS)
    P = enc.num_prefix_tokens
    with torch.no_grad():
        tokens, grid, ctx = enc._embed(x, None)
        block = enc.get_blocks()[0]
        out = block_runner(enc, 0, grid)(block, tokens, ctx)
        index = torch.arange(GRID[0] * GRID[1]).reshape(GRID)
        attn = 0
        for r in range(0, GRID[0], WS):
            for c in range(0, GRID[1], WS):
                idx = index[r:r + WS, c:c + WS].flatten()
                sub = torch.cat([tokens[:, :P], tokens[:, P + idx]], dim=1)
                attn = attn + block.attn(block.norm1(sub))[:, :P] * (idx.numel() / index.numel())
        pre = tokens[:, :P] + block.ls1(attn)
        ref = pre + block.ls2(block.mlp(block.norm2(pre)))
    assert torch.allclose(out[:, :P], ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_tokens_in_other_windows_do_not_interact(family):
    enc, x = _make(family)
    spec = FAMILIES[family]
    p = spec["patch"]
    x2 = x.clone()
    x2[..., :p, :p] += 3.0  # the token in row 0, column 0 (every frame for Prithvi)
    before = _feats(enc, x, [0])[0]
    changed = (_feats(enc, x2, [0])[0] - before).abs().amax(dim=1)  # (B, [t,] h, w)
    assert changed[..., WS:, :].min() > 0 and changed[..., :, WS:].min() > 0  # global: all change
    enc.set_window_attention(WS, global_blocks=(1, 2))
    before = _feats(enc, x, [0])[0]
    changed = (_feats(enc, x2, [0])[0] - before).abs().amax(dim=1)
    inside = changed[..., :WS, :WS]
    outside = changed.clone()
    outside[..., :WS, :WS] = 0
    assert inside.min() > 0
    assert outside.max() == 0


def test_prithvi_windows_span_all_frames():
    enc, x = _make("prithvi")
    enc.set_window_attention(WS)
    p = FAMILIES["prithvi"]["patch"]
    x2 = x.clone()
    x2[:, :, 0, :p, :p] += 3.0  # frame 0 only
    with torch.no_grad():
        diff = (enc.forward_features(x2, layers=0, norm=False)[0]
                - enc.forward_features(x, layers=0, norm=False)[0]).abs().amax(dim=1)  # (B, t, h, w)
    assert diff[:, 1, :WS, :WS].min() > 0  # frame 1 of the same window sees it
    assert diff[:, :, WS:].max() == 0 and diff[:, :, :, WS:].max() == 0


@pytest.mark.parametrize("family", ["dinov3", "prithvi"])
def test_state_dict_and_pretrained_loading_unchanged(family):
    enc, x = _make(family)
    sd = {k: v.clone() for k, v in enc.state_dict().items()}
    ref = _feats(enc, x, [-1])[0]
    spec = FAMILIES[family]
    other = build_encoder(spec["name"], **spec["kw"]).eval()
    other.set_window_attention(WS, global_blocks=(-1,))
    assert other.global_blocks == (2,)
    assert other.state_dict().keys() == sd.keys()
    other.load_state_dict(sd, strict=True)
    assert not torch.equal(_feats(other, x, [-1])[0], ref)
    other.set_window_attention(0)
    assert windowed_blocks(other) == []
    assert torch.equal(_feats(other, x, [-1])[0], ref)
    # loading through the checkpoint path too
    again = build_encoder(spec["name"], weights=sd, **spec["kw"]).eval()
    again.set_window_attention(WS)
    other.set_window_attention(WS)
    assert torch.equal(_feats(again, x, [-1])[0], _feats(other, x, [-1])[0])


def test_gradients_with_activation_checkpointing():
    enc, x = _make("dinov3")
    enc.set_window_attention(WS, global_blocks=(1,))
    grads = []
    for ckpt in (False, True):
        enc.zero_grad()
        enc.set_grad_checkpointing(ckpt)
        enc.forward_features(x, layers=[-1])[0].square().mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in enc.parameters() if p.grad is not None]))
    assert grads[0].abs().max() > 0
    assert torch.allclose(grads[0], grads[1], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("frames, prefix", [(1, 0), (1, 5), (3, 1)])
def test_layout_round_trip_and_mask(frames, prefix):
    lay = WindowLayout.build((frames, *GRID) if frames > 1 else GRID, (WS, WS), batch=2, prefix=prefix)
    assert lay.counts == (2, 3) and lay.padded == (8, 12)
    x = torch.randn(2, prefix + frames * GRID[0] * GRID[1], 5)
    win = lay.partition(x)
    assert win.shape == (2 * 6, prefix + frames * WS * WS, 5)
    assert torch.equal(lay.merge(win)[:, prefix:], x[:, prefix:])
    assert torch.allclose(lay.merge(win)[:, :prefix], x[:, :prefix], atol=1e-6)
    mask = lay.key_mask(x.device)
    assert mask.shape == (12, 1, 1, win.shape[1])
    assert int(mask[:6].sum()) == 6 * prefix + frames * GRID[0] * GRID[1]
    assert torch.allclose(lay.window_weights("cpu", torch.float64).sum(), torch.tensor(1.0, dtype=torch.float64))


@pytest.mark.parametrize("bad, match", [(-1, "positive"), ((3,), "pair"), ("big", "int"), ((2, 0), "positive")])
def test_bad_window_size(bad, match):
    enc, _ = _make("dinov2_reg")
    with pytest.raises(ValueError, match=match):
        enc.set_window_attention(bad)


def test_bad_global_block():
    enc, _ = _make("clay")
    with pytest.raises(ValueError, match="out of range .* 3 blocks"):
        enc.set_window_attention(WS, global_blocks=(3,))
