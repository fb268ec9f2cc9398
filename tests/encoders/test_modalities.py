"""The one modality table (``d2geo.encoders.modalities``): TerraMind, CROMA and the data layer
read it, and ``canonical_channel`` compares channel names through it."""
import ast
import pathlib

from d2geo.encoders import croma, modalities, terramind
from d2geo.encoders.modalities import MODALITIES, MODALITY_SEP, PLATFORM_PREFIXES, canonical_channel

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_families_read_the_one_table():
    assert terramind.TERRAMIND_MODALITIES is MODALITIES
    assert terramind.MODALITY_SEP is croma.MODALITY_SEP is MODALITY_SEP
    assert terramind.canonical_channel is canonical_channel
    # CROMA's prefixes are the table's Sentinel-2 / Sentinel-1 modalities and the platform prefixes
    assert set(croma._PREFIXES) == {p.lower() for p in PLATFORM_PREFIXES} | {
        m.lower() for ms in PLATFORM_PREFIXES.values() for m in ms}
    for ms in PLATFORM_PREFIXES.values():
        assert len({MODALITIES[m].sensor.split("-")[1] for m in ms}) == 1  # one platform per prefix
    assert all(m.units and m.bands for m in MODALITIES.values())


def test_modality_names_are_defined_once():
    """No module but modalities.py assigns MODALITY_SEP or a table of modality names."""
    for path in (ROOT / "d2geo").rglob("*.py"):
        if path.name == "modalities.py":
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign):
                names = [t.id for t in node.targets if isinstance(t, ast.Name)]
                assert "MODALITY_SEP" not in names, path
        if path.parts[-2] == "data":
            assert "encoders.terramind import MODALITY_SEP" not in path.read_text(), path


def test_canonical_channel():
    assert canonical_channel("S2L2A:nir08") == "S2L2A:B8A"
    assert canonical_channel(" s2l2a : B04") == "S2L2A:B04"
    assert canonical_channel("DEM") == "DEM:DEM"
    assert canonical_channel("untok_sen1rtc@224:vv") == "S1RTC:VV"
    for other in ("S2L2A", "B04", "LULC:x", 3):
        assert canonical_channel(other) == other
    assert modalities.split_channel("S9:B04") is None
