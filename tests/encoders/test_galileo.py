"""Galileo fidelity against the publisher's ``single_file_galileo.py`` (carried as data: see
tests/fixtures/make_galileo_fixture.py, which ran the upstream code once, seed 0).

The fixture holds a small random-weight upstream ``Encoder`` in the published key layout (8 px
kernels) and its outputs after 1, 2 and 3 blocks (with the exit norm) for four inputs: all
seven channel groups on a square grid, Sentinel-2 + Sentinel-1 at the pretraining samples'
96 px, the same on a non-square grid (run upstream on a square canvas with the outside
patches masked out), and a 4 px patch resampled from the 8 px kernels (upstream's
FlexiPatchEmbed). The inputs are rebuilt by the script's hash. The cases with the SRTM
space group are checked in test_galileo_srtm.py.
"""
import logging
import os
import sys
from datetime import datetime, timezone

import pytest
import torch

from d2geo.encoders import BandError, CheckpointError, EncoderInputError, build_encoder, get_pretrained_cfg
from d2geo.encoders import galileo as galileo_mod

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(HERE, "fixtures"))
import make_galileo_fixture as fixture  # noqa: E402

DATA = os.path.join(HERE, "fixtures", "galileo_official_tiny.pt")
TINY = dict(embed_dim=16, depth=3, num_heads=4)
TOL = 1e-4


@pytest.fixture(scope="module")
def official():
    return torch.load(DATA, map_location="cpu", weights_only=True)


def _timestamps(months) -> torch.Tensor:
    return torch.tensor([[datetime(2022, int(m) + 1, 15, tzinfo=timezone.utc).timestamp() for m in row]
                         for row in months.tolist()], dtype=torch.float64)


def _metadata(case, batch):
    return {"timestamps": _timestamps(case["months"]), "gsd": torch.full((batch,), case["gsd"])}


def _encoder(official, case, tmp_path, **kw):
    path = tmp_path / "encoder.pt"
    torch.save(official["state_dict"], path)
    return build_encoder("galileo_nano", weights=str(path), patch_size=case["patch_size"], bands=case["bands"],
                         num_frames=len(case["months"][0]), **TINY, **kw).eval()


@pytest.mark.parametrize("index", [0, 1, 2, 3],
                         ids=["all_groups_square", "native_96px", "s2_s1_non_square", "s2_patch4_resampled"])
def test_matches_upstream_galileo(official, index, tmp_path):
    case = official["cases"][index]
    assert case["name"] == fixture.CASES[index][0]
    x = fixture.formula_input(index)
    enc = _encoder(official, case, tmp_path)
    with torch.no_grad():
        maps = enc.forward_features(x, layers=[0, 1, 2], metadata=_metadata(case, x.shape[0]))
    for layer, (ours, ref) in enumerate(zip(maps, case["layer_maps"])):
        assert ours.shape == ref.shape
        assert (ours - ref).abs().max() < TOL, f"block {layer}"
    # upstream's per-patch average of all tokens = the backbone's temporal_fold='mean'
    assert (maps[-1].mean(dim=2) - case["pooled"]).abs().max() < TOL


def test_published_layout_loads_and_names_what_it_leaves_out(official):
    from d2geo.encoders import load_encoder_weights

    enc = build_encoder("galileo_nano", bands=list(galileo_mod.GALILEO_BANDS), **TINY)
    # some published files carry an extra '.backbone' in key names (upstream's load_from_folder
    # strips it); wrapped in a training checkpoint's 'model.encoder.' prefix too
    sd = {"model.encoder." + k.replace("blocks.", "blocks.backbone.", 1): v
          for k, v in official["state_dict"].items()}
    report = load_encoder_weights(enc, sd)
    ignored = report.ignored
    assert any("space_embed.SRTM" in k for k in ignored) and any("static_embed" in k for k in ignored)
    assert any(k.endswith("space_time_embed.NDVI.proj.weight") for k in ignored)  # NDVI not in these bands
    assert any(k.endswith("pos_embed") for k in ignored) and any("month_embed" in k for k in ignored)
    assert "blocks.0.attn.qkv.weight" in report.loaded


def test_fixed_tables_equal_the_ones_upstream_stores(official):
    enc = build_encoder("galileo_nano", **TINY)
    sd = official["state_dict"]
    assert torch.allclose(enc.time_table, sd["pos_embed"], atol=1e-6)
    assert torch.allclose(enc.month_table, sd["month_embed.weight"], atol=1e-6)


def test_variants_are_the_published_architectures(official):
    from d2geo.encoders import get_encoder_config

    for size, up in official["model_configs"].items():
        ours = get_encoder_config(f"galileo_{size}")
        assert (ours["embed_dim"], ours["depth"], ours["num_heads"]) == (
            up["embedding_size"], up["depth"], up["num_heads"]), size
        enc = build_encoder(f"galileo_{size}", depth=1)  # the blocks' width, MLP ratio and kernels at full width
        assert enc.blocks[0].mlp.fc1.out_features == up["mlp_ratio"] * up["embedding_size"]
        assert enc.max_patch_size == up["max_patch_size"] and enc.max_sequence_length == up["max_sequence_length"]


def test_real_nano_key_layout_loads_strictly(official):
    """Every tensor of the published nano encoder.pt (names and shapes) is loaded or named."""
    from d2geo.encoders import load_encoder_weights

    enc = build_encoder("galileo_nano", bands=list(galileo_mod.GALILEO_BANDS) + ["NDVI"])
    sd = {k: torch.zeros(shape) for k, shape in official["nano_keys"]}
    report = load_encoder_weights(enc, sd)
    assert set(report.loaded) | set(report.ignored) >= {k for k in sd if not k.startswith("blocks.")}
    assert len(report.loaded) == len(enc.state_dict())


def test_d2geo_checkpoint_round_trip(official, tmp_path):
    case = official["cases"][2]
    enc = _encoder(official, case, tmp_path)
    path = tmp_path / "ours.pt"
    torch.save(enc.state_dict(), path)
    again = build_encoder("galileo_nano", weights=str(path), patch_size=8, bands=case["bands"], num_frames=3,
                          **TINY).eval()
    x = fixture.formula_input(2)
    md = _metadata(case, 2)
    with torch.no_grad():
        assert torch.equal(enc(x, metadata=md), again(x, metadata=md))


def test_month_and_gsd_change_the_features(official, tmp_path):
    case = official["cases"][0]
    enc = _encoder(official, case, tmp_path)
    x = fixture.formula_input(0)
    md = _metadata(case, 2)
    with torch.no_grad():
        base = enc(x, metadata=md)
        other_month = enc(x, metadata={**md, "timestamps": md["timestamps"] + 40 * 86400})
        other_gsd = enc(x, metadata={**md, "gsd": md["gsd"] * 3})
    assert (base - other_month).abs().max() > 1e-3 and (base - other_gsd).abs().max() > 1e-3


def test_missing_timestamps_are_refused_unless_a_default_month_is_given(official, tmp_path, caplog, monkeypatch):
    case = official["cases"][3]
    x = fixture.formula_input(3)
    enc = _encoder(official, case, tmp_path)
    with pytest.raises(EncoderInputError, match="calendar month.*timestamps.*default_month"):
        enc(x)
    enc = _encoder(official, case, tmp_path, default_month=4)  # the case's month
    from d2geo.encoders import metadata as metadata_mod

    # warned once per process: another test may have warned already
    monkeypatch.setattr(metadata_mod, "_WARNED", set())
    with torch.no_grad(), caplog.at_level(logging.WARNING):
        out = enc.forward_features(x, layers=[2], metadata={"gsd": torch.tensor([10.0])})[0]
    assert (out - case["layer_maps"][2]).abs().max() < TOL
    assert "default_month" in caplog.text


def test_unsupported_and_partial_inputs_are_refused_by_name():
    with pytest.raises(BandError, match="WorldCereal.*does not take.*SRTM space group"):
        build_encoder("galileo_nano", bands=["S2:B02", "S2:B03", "S2:B04", "worldcereal"], **TINY)
    with pytest.raises(BandError, match="S2_RGB needs.*got only.*give every band of a group"):
        build_encoder("galileo_nano", bands=["S2:B02", "S2:B03"], **TINY)
    with pytest.raises(BandError, match="'S2:B01' is not a Galileo input"):
        build_encoder("galileo_nano", bands=["S2:B01", "S2:B02", "S2:B03", "S2:B04"], **TINY)
    with pytest.raises(BandError, match="'LS:b1' is a Galileo LandScan"):
        build_encoder("galileo_nano", bands=["S1:VV", "S1:VH", "LS:b1"], **TINY)
    with pytest.raises(BandError, match="modality 'S2RGB', which Galileo does not take"):
        build_encoder("galileo_nano", bands=["S2RGB:red"], **TINY)
    with pytest.raises(BandError, match="two processing levels.*S2L1C.*S2L2A"):
        build_encoder("galileo_nano", bands=["S2L1C:B02", "S2L2A:B03", "S2L1C:B04"], **TINY)
    with pytest.raises(BandError, match="ERA5"):
        build_encoder("galileo_nano", bands=["S1:VV", "S1:VH", "temperature_2m"], **TINY)
    with pytest.raises((BandError, ValueError), match="twice|more than once|same Galileo band"):
        build_encoder("galileo_nano", bands=["S1:VV", "S1:VH", "S1RTC:VV"], **TINY)


def test_bad_shapes_frames_and_settings_are_refused():
    enc = build_encoder("galileo_nano", num_frames=2, default_month=0, **TINY)
    with pytest.raises(EncoderInputError, match="3 dates but the encoder was built for num_frames=2"):
        enc(torch.randn(1, 12, 3, 16, 16))
    with pytest.raises(EncoderInputError, match="4-D image"):
        enc(torch.randn(1, 12, 16, 16))
    with pytest.raises(EncoderInputError, match="input has 10 bands"):
        enc(torch.randn(1, 10, 2, 16, 16))
    with pytest.raises(EncoderInputError, match="multiple of the patch size"):
        enc(torch.randn(1, 12, 2, 18, 16))
    with pytest.raises(EncoderInputError, match="window attention does not apply"):
        enc.set_window_attention(4)
    with pytest.raises(ValueError, match="max_sequence_length"):
        build_encoder("galileo_nano", num_frames=25)
    with pytest.raises(ValueError, match="max_patch_size"):
        build_encoder("galileo_nano", patch_size=16)
    with pytest.raises(ValueError, match="default_month"):
        build_encoder("galileo_nano", default_month=12)
    with pytest.raises(CheckpointError, match="no 'blocks.0.norm1.weight'"):
        build_encoder("galileo_nano", weights={"patch_embed.proj.weight": torch.zeros(1)}, **TINY)


def test_pretrained_table_and_statistics(official):
    norm = official["normalization_13"]
    stats = {s.name: s for s in get_pretrained_cfg("galileo_nano").stats}
    x = torch.linspace(-30, 5000, 7)
    for name, names in (("galileo-s2", ["B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B11", "B12"]),
                        ("galileo-s1", ["VV", "VH"])):
        s = stats[name]
        for i, b in enumerate(names):
            j = norm["bands"].index(b)
            upstream = (x - (norm["mean"][j] - 2 * norm["std"][j])) / (4 * norm["std"][j])  # Normalizer(std=True)
            ours = (x - s.mean[i]) / s.std[i]
            assert torch.allclose(ours, upstream, atol=1e-5), (name, b)
    for size in ("nano", "tiny", "base"):
        cfg = get_pretrained_cfg(f"galileo_{size}")
        assert cfg.pinned and cfg.license == "MIT" and cfg.pinned_by
    assert get_pretrained_cfg("galileo_nano").sha256


def test_real_sentinel_tiles_through_read_modalities(terramind_examples, official, tmp_path):
    pytest.importorskip("detectron2", reason="d2geo.data needs detectron2: see README for installing it from source")
    from rasterio.windows import Window

    from d2geo.data.geotiff import read_modalities

    name = sorted(os.listdir(os.path.join(terramind_examples, "S2L1C")))[0]
    files = {m: os.path.join(terramind_examples, m, name) for m in ("S2L1C", "S1RTC")}
    sample = read_modalities(files, window=Window(0, 0, 48, 32))
    keep = [i for i, b in enumerate(sample.band_names) if not b.endswith(("B01", "B09", "B10"))]
    bands = [sample.band_names[i] for i in keep]
    x = torch.as_tensor(sample.image[keep], dtype=torch.float32)[None, :, None]
    case = official["cases"][3]
    enc = _encoder(official, dict(case, bands=bands, patch_size=4), tmp_path, default_month=6)
    with torch.no_grad():
        out = enc(x / 1000.0)
    assert tuple(out.shape) == (1, 16, 1, 8, 12) and torch.isfinite(out).all()


def test_export_with_timestamps_is_refused():
    enc = build_encoder("galileo_nano", embed_dim=16, depth=1, num_heads=4).eval()
    stamps = torch.tensor([[1.6e9]], dtype=torch.float64)

    class WithDates(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            return self.net(x, metadata={"timestamps": stamps})

    with pytest.raises(Exception, match="month encoding cannot be traced.*default_month"):
        torch.export.export(WithDates(enc), (torch.randn(1, 12, 1, 16, 16),))
