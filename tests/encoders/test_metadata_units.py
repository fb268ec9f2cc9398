"""One unit check for every family that takes band wavelengths (micrometres) or a ground
sample distance (metres): ``metadata.check_wavelengths`` / ``metadata.check_gsd``."""
import pytest
import torch

# the families' tiny test variants, one block: the checks run before any block
from d2geo.encoders import EncoderInputError, build_encoder

RGB_UM = [0.665, 0.56, 0.49]
RGB_NM = [665.0, 560.0, 490.0]


def _dofa(**kw):
    return build_encoder("dofa_test", depth=1, img_size=32, **kw).eval()


def _scalemae():
    return build_encoder("scale_mae_test", depth=1, img_size=32).eval()


def _clay(**kw):
    return build_encoder("clay_test", depth=1, **kw).eval()


def _copernicus(**kw):
    return build_encoder("copernicusfm_test", depth=1, img_size=32, **kw).eval()


@pytest.mark.parametrize("waves, match", [
    (RGB_NM, r"665 looks like nanometres: divide by 1000"),
    ([0.0, 0.56, 0.49], r"holds 0,.*positive"),
    ([-0.665, 0.56, 0.49], r"holds -0.665,.*positive"),
    ([6.65e-7, 5.6e-7, 4.9e-7], r"looks like metres: multiply by 1e6"),
])
def test_dofa_refuses_wavelengths_that_are_not_micrometres(waves, match):
    enc = _dofa()
    x = torch.randn(1, 3, 32, 32)
    with pytest.raises(EncoderInputError, match=match + r".*micrometres"):
        enc.forward_features(x, metadata={"wavelengths": waves})
    with pytest.raises(ValueError, match=match):
        _dofa(wavelengths=waves)
    enc.forward_features(x, metadata={"wavelengths": RGB_UM})  # micrometres pass


@pytest.mark.parametrize("gsd, match", [
    (0.01, r"0.01 looks like kilometres: multiply by 1000"),
    (0.0, r"holds 0,.*positive number of metres"),
    (-10.0, r"holds -10,.*positive number of metres"),
    (float("inf"), r"NaN or inf"),
])
def test_scalemae_refuses_gsd_that_is_not_metres(gsd, match):
    enc = _scalemae()
    x = torch.randn(2, 3, 32, 32)
    with pytest.raises(EncoderInputError, match=match):
        enc.forward_features(x, metadata={"gsd": [10.0, gsd]})
    enc.forward_features(x, metadata={"gsd": [10.0, 0.3]})


def test_every_family_that_takes_wavelengths_or_gsd_uses_the_one_check():
    """The same value is refused with the same message by DOFA, Clay and Copernicus-FM
    (wavelengths) and Scale-MAE, Clay and Copernicus-FM (GSD), at build time and in metadata."""
    msg = "665 looks like nanometres: divide by 1000"
    for build in (lambda: _dofa(wavelengths=RGB_NM), lambda: _clay(wavelengths=RGB_NM),
                  lambda: _copernicus(wavelengths=RGB_NM, bandwidths=[0.03, 0.035, 0.065])):
        with pytest.raises(ValueError, match=msg):
            build()
    with pytest.raises(EncoderInputError, match=msg):
        _clay(gsd=10.0).forward_features(torch.randn(1, 3, 32, 32), metadata={"wavelengths": RGB_NM})
    gmsg = "0.01 looks like kilometres"
    with pytest.raises(ValueError, match=gmsg):
        _clay(gsd=0.01)
    for enc, n in ((_clay(wavelengths=RGB_UM), 3), (_copernicus(bands=["red", "green", "blue"]), 3),
                   (_scalemae(), 3)):
        with pytest.raises(EncoderInputError, match=gmsg):
            enc.forward_features(torch.randn(1, n, 32, 32), metadata={"gsd": [0.01]})


def test_radar_wavelengths_only_where_the_family_codes_them():
    from d2geo.encoders.metadata import check_gsd, check_wavelengths

    check_wavelengths([5.55e4], microwave=True)  # Copernicus-FM's C band
    with pytest.raises(EncoderInputError, match="outside 0.2..15 um"):
        check_wavelengths([5.55e4])
    check_gsd([float("nan"), 10.0])  # NaN: 'unknown', left to the family
