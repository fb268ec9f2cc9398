"""What tests/ and benchmarks/ share (never installed, never imported by d2geo).

* :mod:`testkit.upstream`: the upstream reference modules, read from pinned wheels (test
  references, never runtime dependencies); :class:`~testkit.upstream.UpstreamUnavailable`
  when one cannot be had (the tests skip, the benchmarks report "not measured");
* :func:`rel_err`: the fidelity measure of both;
* :func:`tiny_rcnn_heads`: Mask R-CNN heads shrunk for the tests and the quick benchmark profile.

Importable from the repository root (``pytest.ini`` puts it on the path; the benchmarks
insert it).
"""
from __future__ import annotations

from .heads import tiny_rcnn_heads
from .upstream import UpstreamUnavailable

__all__ = ["rel_err", "tiny_rcnn_heads", "UpstreamUnavailable"]


def rel_err(ours, ref) -> float:
    """max |ours - ref| / max |ref| of two tensors of one shape: the fidelity measure of the
    tests and the benchmarks."""
    assert ours.shape == ref.shape, f"shapes differ: {tuple(ours.shape)} vs {tuple(ref.shape)}"
    return ((ours.double() - ref.double()).abs().max() / ref.double().abs().max()).item()
