"""Model cards (``describe``), ``--list-encoders``, weight licenses carried with a model, and
variant names that follow their family's module name (Scale-MAE's old spelling kept as an alias)."""
from __future__ import annotations

import importlib.util
import logging
import os

import pytest
import torch

from d2geo.encoders import (
    CheckpointError, build_encoder, describe, encoder_list_text, is_test_variant, list_encoders, weights_licenses,
)
from d2geo.encoders import registry
from d2geo.encoders.cards import FIDELITY_REFERENCES, parameter_count

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.parametrize("name", list_encoders())
def test_describe_works_for_every_variant(name):
    card = describe(name)
    assert card.name == name and card.parameters > 0
    assert card.family in FIDELITY_REFERENCES, f"{name}: record the upstream code its fidelity is tested against"
    assert os.path.isfile(os.path.join(ROOT, card.fidelity_test)), card.fidelity_test
    assert card.stats and card.license and card.source
    assert card.pinned or card.unpinned_reason
    text = str(card)
    for part in (name, card.license, card.source, card.fidelity_reference, f"{card.parameters:,}",
                 *card.stats[0].bands, card.sha256 or "not pinned", card.revision or ""):
        assert part in text, (name, part)


@pytest.mark.parametrize("name", ["prithvi_eo_v2_tiny_tl", "terramind_v1_tiny", "dinov2_vits14_reg",
                                  "satlas_swint_sentinel2_si_rgb"])
def test_parameter_count_without_weights_equals_a_real_build(name):
    assert parameter_count(name) == sum(p.numel() for p in build_encoder(name).parameters())


def test_list_encoders_flag_of_the_converter(capsys):
    from d2geo.cli import convert as tool
    tool.main(["--list-encoders"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[0] for line in lines] == list_encoders()
    assert any("scale_mae_vitl16" in line and "non-commercial" in line for line in lines)
    tool.main(["--list-encoders", "scalemae_vitl16"])  # a name (even the old one): the whole card
    out = capsys.readouterr().out
    assert out.strip() == str(describe("scale_mae_vitl16")) and "NON-COMMERCIAL" in out
    assert encoder_list_text("nothing_*").startswith("no encoder matches 'nothing_*'")


# -- test variants (timm's test_vit) ---------------------------------------------------------------
FAMILIES = sorted(set(FIDELITY_REFERENCES))


def test_every_family_has_a_tiny_test_variant_hidden_from_the_listing():
    tests = list_encoders(tests=True)
    assert sorted(n for n in tests if is_test_variant(n)) == sorted(f"{f}_test" for f in FAMILIES)
    assert not [n for n in list_encoders() if is_test_variant(n) or n.endswith("_test")]
    assert set(list_encoders(tests=True)) - set(list_encoders()) == {f"{f}_test" for f in FAMILIES}
    with pytest.raises(KeyError, match="kept for test variants"):
        registry.register_encoder("dinov2_other_test", registry._REGISTRY["dinov2_vits14"].builder)


@pytest.mark.parametrize("family", FAMILIES)
def test_test_variant_is_its_family_shrunk_with_no_weights_and_says_so(family):
    name = f"{family}_test"
    entry = registry._REGISTRY[name]
    assert entry.builder.__module__.rsplit(".", 1)[1] == family  # the family's own code
    like = next(n for n in list_encoders() if registry._REGISTRY[n].builder is entry.builder
                and set(registry._REGISTRY[n].config) <= set(entry.config))
    assert like, name
    assert parameter_count(name) < 3.5e6 and parameter_count(name) < parameter_count(like) / 10
    card = describe(name)
    assert card.test_only and card.source is None and card.pinned and not card.unpinned_reason
    assert card.stats, "the statistics of the variant it shrinks (configs and the units check read them)"
    text = str(card)
    assert text.splitlines()[0].endswith("TEST VARIANT for d2geo's tests (tiny, random weights), not a real model")
    assert "pretrained at" not in text and "none published" in text and "nothing to pin" in text
    assert "random weights" in card.license and "for d2geo's tests only" in card.notes
    with pytest.raises(CheckpointError, match=f"{name} has no published weights \\(TEST VARIANT"):
        build_encoder(name, pretrained=True)


def test_list_encoders_names_test_variants_only_when_asked_and_marks_them():
    assert "dinov2_test" not in encoder_list_text()
    rows = encoder_list_text("*_test").splitlines()
    assert [r.split()[0] for r in rows] == list_encoders("*_test", tests=True)
    assert all("TEST VARIANT (tiny, random weights)" in r for r in rows)
    assert encoder_list_text("dinov2_test") == str(describe("dinov2_test"))
    assert [r.split()[0] for r in encoder_list_text("dinov2_*").splitlines()] == list_encoders("dinov2_*")


# -- licenses --------------------------------------------------------------------------------------
def test_non_commercial_weights_say_so_when_loaded_and_their_license_is_carried(tmp_path, monkeypatch, caplog):
    small = dict(embed_dim=32, depth=2, num_heads=2, img_size=32)
    saved = build_encoder("scale_mae_vitl16", **small)
    path = tmp_path / "scalemae.pth"
    torch.save(saved.state_dict(), path)
    monkeypatch.setattr(registry, "_published_weights", lambda name, entry: str(path))  # as if downloaded
    monkeypatch.setattr("d2geo.encoders.licenses._WARNED", set())
    caplog.set_level(logging.WARNING, logger="d2geo.encoders.licenses")
    model = torch.nn.Sequential(build_encoder("scale_mae_vitl16", pretrained=True, **small))
    build_encoder("scale_mae_vitl16", pretrained=True, **small)
    warnings = [r.getMessage() for r in caplog.records if "non-commercial" in r.getMessage()]
    assert len(warnings) == 1 and "CC-BY-NC-4.0" in warnings[0]  # once per variant
    (record,) = weights_licenses(model)
    cfg = registry.get_pretrained_cfg("scale_mae_vitl16")
    assert record == dict(encoder="scale_mae_vitl16", source=cfg.source, sha256=cfg.sha256, license="CC-BY-NC-4.0")
    # random weights carry nothing; a file of the user's own has an unknown license
    assert weights_licenses(build_encoder("scale_mae_vitl16", **small)) == []
    (own,) = weights_licenses(build_encoder("scale_mae_vitl16", weights=str(path), **small))
    assert own["source"] == str(path) and own["license"].startswith("unknown")


# -- names -----------------------------------------------------------------------------------------
def test_variant_names_start_with_their_family_module(caplog):
    for name in list_encoders():
        family = registry._REGISTRY[name].builder.__module__.rsplit(".", 1)[1]
        # data2vec is one of the SSL4EO-S12 variants (ssl4eo_s12_*), in a module of its own; so are
        # the Satlas ResNets (satlas_resnet50_*, as torchgeo's file names, beside satlas_swinb_*)
        expected = {"ssl4eo_data2vec": "ssl4eo", "satlas_resnet": "satlas"}.get(family, family)
        assert name.startswith(expected + "_"), (name, family)
    assert "scalemae_vitl16" not in list_encoders()


def test_old_scale_mae_name_still_resolves_and_is_deprecated_once(monkeypatch, caplog):
    monkeypatch.setattr(registry, "_ALIASES_WARNED", set())
    caplog.set_level(logging.WARNING, logger="d2geo.encoders.registry")
    small = dict(embed_dim=32, depth=1, num_heads=2, img_size=32)
    old = build_encoder("scalemae_vitl16", **small)
    build_encoder("scalemae_vitl16", **small)
    assert type(old) is type(build_encoder("scale_mae_vitl16", **small))
    assert registry.get_pretrained_cfg("scalemae_vitl16") is registry.get_pretrained_cfg("scale_mae_vitl16")
    notes = [r.getMessage() for r in caplog.records if "deprecated" in r.getMessage()]
    assert notes == ["encoder name 'scalemae_vitl16' is deprecated: it is now 'scale_mae_vitl16' "
                     "(the old name still works)"]
