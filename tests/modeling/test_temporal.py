"""Temporal folds of GeoBackbone: max, diff, frame subsets and L-TAE-style attention pooling,
each against values computed by hand (plain Python loops over pixels / heads / dates)."""
from __future__ import annotations

import math

import pytest
import torch

pytest.importorskip("detectron2", reason="detectron2 is not installed: see README for installing it from source")

from d2geo.modeling import GeoBackbone  # noqa: E402
from d2geo.modeling.temporal import TemporalAttentionPool, fold_time  # noqa: E402

#: how the tests use prithvi_test (Prithvi-EO-2.0 with time and location codes): two blocks
TINY_PRITHVI = dict(depth=2, patch_size=16, img_size=32, num_frames=4)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _series():
    # B=1, D=2, t=3, h=1, w=2: values chosen so that max / diff differ from mean and first/last
    x = torch.tensor([[[[[1.0, -2.0]], [[4.0, 0.5]], [[-3.0, 7.0]]],
                       [[[0.0, 2.0]], [[-1.0, 3.0]], [[5.0, -4.0]]]]])
    assert x.shape == (1, 2, 3, 1, 2)
    return x


def test_max_and_diff_by_hand():
    x = _series()
    assert fold_time(x, "max").tolist() == [[[[4.0, 7.0]], [[5.0, 3.0]]]]
    # last minus first: channel 0: (-3-1, 7-(-2)); channel 1: (5-0, -4-2)
    assert fold_time(x, "diff").tolist() == [[[[-4.0, 9.0]], [[5.0, -6.0]]]]
    with pytest.raises(ValueError, match="at least two time steps"):
        fold_time(x[:, :, :1], "diff")


def test_frame_subsets_by_hand():
    x = _series()
    # frames [2, 0]: diff = frame 0 - frame 2 (order as given), concat time-major
    assert fold_time(x, "diff", frames=[2, 0]).tolist() == [[[[4.0, -9.0]], [[-5.0, 6.0]]]]
    assert fold_time(x, "concat", frames=[0, -1]).tolist() == [
        [[[1.0, -2.0]], [[0.0, 2.0]], [[-3.0, 7.0]], [[5.0, -4.0]]]]
    assert fold_time(x, "mean", frames=[0, 1]).tolist() == [[[[2.5, -0.75]], [[-0.5, 2.5]]]]
    assert fold_time(x, "max", frames=[1]).tolist() == [[[[4.0, 0.5]], [[-1.0, 3.0]]]]
    for bad, msg in (([3], "out of range"), ([0, 0], "twice"), ([], "no time step"), (1, "list")):
        with pytest.raises(ValueError, match=msg):
            fold_time(x, "mean", frames=bad)


def _attention_by_hand(pool: TemporalAttentionPool, x: torch.Tensor) -> list:
    """L-TAE pooling written out per pixel, head and date with Python floats."""
    B, D, t, h, w = x.shape
    H, k = pool.num_heads, pool.key_dim
    Wk, bk = pool.key.weight.tolist(), pool.key.bias.tolist()
    q = pool.query.tolist()
    g, b = pool.norm.weight.tolist(), pool.norm.bias.tolist()
    eps = pool.norm.eps
    out = [[[[0.0] * w for _ in range(h)] for _ in range(D)] for _ in range(B)]
    for bi in range(B):
        for yi in range(h):
            for xi in range(w):
                keys = []
                for ti in range(t):
                    v = [x[bi, c, ti, yi, xi].item() for c in range(D)]
                    mu = sum(v) / D
                    var = sum((a - mu) ** 2 for a in v) / D
                    n = [(a - mu) / math.sqrt(var + eps) * g[c] + b[c] for c, a in enumerate(v)]
                    # time-index encoding: sin on even channels, cos on odd, 1000 ** (-2i / D)
                    for c in range(D):
                        freq = math.exp(-(c - c % 2) * math.log(pool.period) / D)
                        n[c] += math.sin(ti * freq) if c % 2 == 0 else math.cos(ti * freq)
                    keys.append([sum(Wk[r][c] * n[c] for c in range(D)) + bk[r] for r in range(H * k)])
                for hd in range(H):
                    s = [sum(q[hd][j] * keys[ti][hd * k + j] for j in range(k)) / math.sqrt(k) for ti in range(t)]
                    m = max(s)
                    e = [math.exp(a - m) for a in s]
                    a = [ei / sum(e) for ei in e]
                    per = D // H
                    for c in range(hd * per, (hd + 1) * per):
                        out[bi][c][yi][xi] = sum(a[ti] * x[bi, c, ti, yi, xi].item() for ti in range(t))
    return out


def test_attention_pool_by_hand():
    torch.manual_seed(0)
    pool = TemporalAttentionPool(4, num_heads=2, key_dim=3)
    x = torch.randn(2, 4, 3, 2, 2, dtype=torch.float64)
    pool = pool.double()
    # fresh queries are zero: uniform weights, i.e. the temporal mean
    torch.testing.assert_close(pool(x), x.mean(2))
    with torch.no_grad():
        pool.query.normal_()
        pool.norm.weight.uniform_(0.5, 1.5)
        pool.norm.bias.normal_()
    ref = torch.tensor(_attention_by_hand(pool, x), dtype=torch.float64)
    # the time-index table is float32 (as in every mode), hence 1e-7 and not 1e-12
    torch.testing.assert_close(pool(x), ref, rtol=1e-6, atol=1e-7)
    weights = pool.attention(x)
    assert weights.shape == (2, 2, 3, 2, 2)
    torch.testing.assert_close(weights.sum(2), torch.ones(2, 2, 2, 2, dtype=torch.float64))
    assert not torch.allclose(pool(x), x.mean(2))
    with pytest.raises(ValueError, match="divisible"):
        TemporalAttentionPool(6, num_heads=4)


def test_backbone_modes_channels_and_values():
    x = torch.randn(2, 6, 4, 32, 32)
    base = GeoBackbone("prithvi_test", layers=(0, 1), encoder_kwargs=TINY_PRITHVI)
    feats = base.encoder.forward_features(x, layers=[0, 1])
    expect = {
        ("max", None): (64, lambda f: f.amax(2)),
        ("diff", None): (64, lambda f: f[:, :, 3] - f[:, :, 0]),
        ("diff", (1, 2)): (64, lambda f: f[:, :, 2] - f[:, :, 1]),
        ("concat", (0, 3)): (128, lambda f: torch.cat([f[:, :, 0], f[:, :, 3]], 1)),
        ("mean", (-1,)): (64, lambda f: f[:, :, 3]),
        ("attention", None): (64, lambda f: f.mean(2)),  # zero queries at start
    }
    for (mode, frames), (channels, ref) in expect.items():
        bb = GeoBackbone(base.encoder, layers=(0, 1), temporal_fold=mode, temporal_frames=frames)
        assert {s.channels for s in bb.output_shape().values()} == {channels}, mode
        out = bb(x)
        for name, f in zip(("layer0", "layer1"), feats):
            torch.testing.assert_close(out[name], ref(f), rtol=1e-5, atol=1e-5, msg=f"{mode} {frames}")
    att = GeoBackbone(base.encoder, layers=(0, 1), temporal_fold="attention", temporal_heads=2)
    assert len(att.temporal_pools) == 2 and att.temporal_pools[0].num_heads == 2
    # the pools are trained with the model (outside the encoder: full lr, not frozen)
    frozen = GeoBackbone(base.encoder, layers=(0, 1), temporal_fold="attention", freeze="all")
    assert all(p.requires_grad for p in frozen.temporal_pools.parameters())


def test_backbone_mode_errors():
    enc_kw = {**TINY_PRITHVI, "num_frames": 1}
    with pytest.raises(ValueError, match="needs two time steps"):
        GeoBackbone("prithvi_test", temporal_fold="diff", encoder_kwargs=enc_kw)
    with pytest.raises(ValueError, match="out of range"):
        GeoBackbone("prithvi_test", temporal_frames=[0, 4], encoder_kwargs=TINY_PRITHVI)
    with pytest.raises(ValueError, match="not one of"):
        GeoBackbone("prithvi_test", temporal_fold="median", encoder_kwargs=TINY_PRITHVI)
    with pytest.raises(ValueError, match="not temporal"):
        GeoBackbone("dinov2_test", temporal_frames=[0], encoder_kwargs=dict(depth=2, patch_size=16, img_size=32))
