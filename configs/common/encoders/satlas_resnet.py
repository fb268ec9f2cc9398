"""SatlasPretrain ResNet-50 (Sentinel-2, nine bands, one image) for the task configs.

Weights: ``sentinel2_resnet50_si_ms-1f454cc6.pth`` of the Hugging Face repository
``torchgeo/satlas`` (``SATLAS_RESNET_PRETRAINED`` in ``d2geo/encoders/satlas_resnet.py`` lists the RGB,
multi-image and ResNet-152 files), loaded by name
(``pretrained=True``). Channels ``B04, B03, B02, B05, B06, B07, B08, B11, B12``, scaled as the
weights were trained (torchgeo's transforms): the first three are ESA's 8-bit true-colour image
(the L1C product's TCI file, 0-255) / 255, NOT the B04/B03/B02 reflectance x 10 000 bands (those
would come out about 14 times too large: ESA's L1C TCI saturates at DN 3558); the others are L1C
reflectance x 10 000 / 8160 (Satlas clips them to 0-1). Stack TCI with the six DN bands.

A ResNet is hierarchical: ``backbone`` taps ``layer1..layer4`` (strides 4..32, ``res2..res5``),
which detectron2's ``FPN`` takes directly. Batch norms are frozen (``freeze_bn=True``, the
encoder's default, as detectron2's ResNets fine-tune); a ResNet has no final norm.
"""
from .apply import hierarchical_fragment as _fragment

_name = "satlas_resnet50_sentinel2_si_ms"
encoder = _fragment(_name, drop_path_rate=0.0)
