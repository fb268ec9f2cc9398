"""d2geo: geospatial foundation models as detectron2 backbones."""
__version__ = "0.1.0"
