"""InferenceOptions: every option of a run checked when the options are made."""
from __future__ import annotations

import pytest

from d2geo.inference import InferenceOptions, SceneRequestError
from d2geo.precision import autocast_dtype


@pytest.mark.parametrize("kw, match", [
    (dict(tile=0), "tile=0"),
    (dict(tile=64, overlap=64), r"overlap must be in \[0, tile\)"),
    (dict(overlap=-1), "overlap=-1"),
    (dict(batch_size=0), "batch_size=0"),
    (dict(score_threshold=1.5), r"score_threshold=1.5: give a value in \[0, 1\]"),
    (dict(amp="fast"), "amp='fast'"),
    (dict(cog_blocksize=100), "multiple of 16"),
    (dict(tile=512, max_strip_width=256), "narrower than a window"),
    (dict(min_area_m2=-1.0), "min_area_m2=-1.0 is negative"),
    (dict(polygon_strip_rows=0), "polygon_strip_rows=0"),
    (dict(class_names=["a", "b", "a"]), "name a class twice"),
    (dict(tile=256.0), "tile=256.0: give a whole number"),
])
def test_options_out_of_range_are_refused_when_made(kw, match):
    with pytest.raises(SceneRequestError, match=match):
        InferenceOptions(**kw)


def test_the_output_key_leaves_out_what_changes_only_speed_or_memory():
    a, b = InferenceOptions(num_workers=0, polygon_strip_rows=7), InferenceOptions(num_workers=3)
    assert a.output_key() == b.output_key()
    assert InferenceOptions(tile=128).output_key() != b.output_key()


def test_one_autocast_policy():
    import torch

    from d2geo.precision import native_bfloat16, resolve_precision

    assert autocast_dtype("cpu", "off") is None and autocast_dtype("cpu", "bf16") is torch.bfloat16
    assert autocast_dtype("cpu", "auto") is (torch.bfloat16 if native_bfloat16("cpu") else None)
    assert resolve_precision("auto", "cpu") is torch.bfloat16  # training: mixed precision asked for
    with pytest.raises(ValueError, match="amp='x'"):
        autocast_dtype("cpu", "x")
