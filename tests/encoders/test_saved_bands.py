"""One rule for every family with a per-band patch kernel: checkpoints d2geo writes record
their band names (``adapt.BAND_RECORD``), and a reload maps the kernels by name; a d2geo file
without names keeps its bands as saved (never the pretrained order)."""
import pytest
import torch

from d2geo.data.files import atomic_torch_save
from d2geo.encoders import build_encoder
BAND_RECORD = "d2geo_bands"  # d2geo.encoders.adapt.BAND_RECORD

#: family -> (the family's tiny test variant, overrides (one block where one is enough), bands built
#: with (a reordered subset), the same bands in another order, input size)
FAMILIES = {
    "ssl4eo": ("ssl4eo_test", dict(depth=1, img_size=32),
               ["B04", "B03", "B02", "B08"], ["B08", "B02", "B04", "B03"], 32),
    "ssl4eo_data2vec": ("ssl4eo_data2vec_test", dict(depth=1, img_size=48),
                        ["B04", "B03", "B02", "B08"], ["B08", "B02", "B04", "B03"], 48),
    "scalemae": ("scale_mae_test", dict(depth=1, img_size=32),
                 ["blue", "green", "red"], ["red", "blue", "green"], 32),
    "dinov2": ("dinov2_test", dict(depth=1),
               ["blue", "green", "red"], ["green", "red", "blue"], 28),
    "dinov3": ("dinov3_test", dict(depth=1),
               ["blue", "green", "red"], ["green", "red", "blue"], 32),
    "prithvi": ("prithvi_test", dict(depth=1, num_frames=1),
                ["red", "green", "blue", "nir_narrow"], ["nir_narrow", "blue", "red", "green"], 32),
    "satlas": ("satlas_test", {},
               ["B02", "B03", "B04", "B08"], ["B08", "B04", "B02", "B03"], 64),
    "croma": ("croma_test", dict(modality="joint", depth=2),
              ["S2L2A:B04", "S2L2A:B03", "S1RTC:VH", "S2L2A:B02", "S1RTC:VV"],
              ["S1RTC:VV", "S2L2A:B02", "S2L2A:B04", "S1RTC:VH", "S2L2A:B03"], 32),
    "terramind": ("terramind_test", dict(depth=1),
                  ["S2L2A:B04", "S2L2A:B03", "S1RTC:VH", "S2L2A:B02", "S1RTC:VV"],
                  ["S1RTC:VV", "S2L2A:B02", "S2L2A:B04", "S1RTC:VH", "S2L2A:B03"], 32),
}
META = {"gsd": 10.0}


def _build(name, kw, bands, **extra):
    return build_encoder(name, bands=bands, **kw, **extra).eval()


def _features(enc, x):
    with torch.no_grad():
        return enc.forward_features(x, metadata=META if "scalemae" in type(enc).__name__.lower() else None)[0]


def _close(a, b):
    return (a - b).abs().max() <= 1e-5 * b.abs().max()


def _saved(family, tmp_path, *, record=True):
    name, kw, bands, _, size = FAMILIES[family]
    torch.manual_seed(0)
    enc = _build(name, kw, bands)
    with torch.no_grad():
        for p in enc.parameters():
            p.add_(0.05 * torch.randn_like(p))  # kernels of every band non-zero and distinct
    state = enc.state_dict()
    assert (BAND_RECORD in state) == record or not record
    if not record:
        state = {k: v for k, v in state.items() if k != BAND_RECORD}
    path = tmp_path / f"{family}.pth"
    atomic_torch_save({"model": state, "d2geo": {"encoder": name}}, path)
    x = torch.randn(2, len(bands), size, size)
    return enc, path, x


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_reloading_saved_weights_keeps_or_maps_the_bands_by_name(family, tmp_path):
    name, kw, bands, other, _ = FAMILIES[family]
    enc, path, x = _saved(family, tmp_path)
    want = _features(enc, x)
    # the same bands: the same features, exactly
    assert torch.equal(_features(_build(name, kw, bands, weights=str(path)), x), want)
    # another order: the kernels follow the band names (equal up to the order of the sums)
    perm = [bands.index(b) for b in other]
    assert _close(_features(_build(name, kw, other, weights=str(path)), x[:, perm]), want)
    # a whole-model load (detectron2's checkpointer, load_state_dict) maps them the same way
    again = _build(name, kw, other)
    again.load_state_dict(torch.load(path, weights_only=True)["model"])
    assert _close(_features(again, x[:, perm]), want)


@pytest.mark.parametrize("family", ["ssl4eo", "dinov2", "scalemae", "croma"])
def test_a_d2geo_file_without_band_names_keeps_its_bands_as_saved(family, tmp_path):
    name, kw, bands, _, _ = FAMILIES[family]
    enc, path, x = _saved(family, tmp_path, record=False)
    assert torch.equal(_features(_build(name, kw, bands, weights=str(path)), x), _features(enc, x))
