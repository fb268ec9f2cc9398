"""The reader's band checks (d2geo.data.geotiff): a file that does not name its bands, read with a
sensor of another band count, is refused up front saying what does not match."""
from __future__ import annotations

import os

import numpy as np
import pytest

rasterio = pytest.importorskip("rasterio")

from d2geo.data.geotiff import GeoTiffError, read_geotiff  # noqa: E402
from helpers import write_tif  # noqa: E402

HLS_FROM_L2A = ["B02", "B03", "B04", "B8A", "B11", "B12"]

def test_l1c_file_read_as_l2a_says_what_does_not_match(terramind_examples):
    """Was: 'band 'B02' is not in ...; pass band_names=[...] or sensor= (e.g. 'sentinel-2-l2a' ...)',
    though sensor='sentinel-2-l2a' had been passed."""
    from d2geo.data.geotiff import check_band_request

    path = os.path.join(terramind_examples, "S2L1C", "38D_378R_2_3.tif")
    for call in (lambda: read_geotiff(path, sensor="sentinel-2-l2a", bands=HLS_FROM_L2A),
                 lambda: check_band_request(path, sensor="sentinel-2-l2a", bands=HLS_FROM_L2A)):
        with pytest.raises(GeoTiffError) as e:
            call()
        msg = str(e.value)
        assert "holds 13 bands per frame and does not name them" in msg
        assert "sensor='sentinel-2-l2a' has 12 bands (B01, B02" in msg
        assert "A file of 13 bands in sensor order is 'sentinel-2-l1c'" in msg
    assert check_band_request(path, sensor="sentinel-2-l1c", bands=["B02", "nir08"]) == ("B02", "B8A")


def test_sensor_tag_with_unnamed_bands_is_refused_before_any_pixel_is_read(tmp_path, monkeypatch):
    """A 4-band file tagged SENSOR=sentinel-2-l2a without band names used to pass the request
    checks and fail at its first window ('cannot give wavelengths for the bands ('band1', ...')."""
    from d2geo.data import geotiff
    from d2geo.data.geotiff import check_band_request

    path = write_tif(tmp_path / "tagged.tif", np.ones((4, 16, 16), np.uint16), tags={"SENSOR": "sentinel-2-l2a"})
    monkeypatch.setattr(geotiff.reading, "_read_window", lambda *a, **k: pytest.fail("read pixels"))
    with pytest.raises(GeoTiffError, match=r"holds 4 bands per frame and does not name them \(no band descriptions\), "
                                           r"but its SENSOR tag 'sentinel-2-l2a' has 12 bands .* 'naip'"):
        check_band_request(path)
    with pytest.raises(GeoTiffError, match="correct the file's SENSOR tag"):
        read_geotiff(path)
    monkeypatch.undo()
    named = check_band_request(path, band_names=["B02", "B03", "B04", "B08"])
    assert named == ("B02", "B03", "B04", "B08")
    assert read_geotiff(path, band_names=["B02", "B03", "B04", "B08"]).metadata["wavelengths"].shape == (4,)
