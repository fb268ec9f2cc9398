import os
import shutil

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py


class BuildPyWithConfigs(build_py):
    """Ship configs/ inside the package as d2geo/model_zoo/configs (see d2geo.model_zoo)."""

    def run(self):
        super().run()
        here = os.path.dirname(os.path.abspath(__file__))
        dst = os.path.join(self.build_lib, "d2geo", "model_zoo", "configs")
        shutil.copytree(os.path.join(here, "configs"), dst, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))

# training, the encoders and config + checkpoint runs (users bring their own CUDA build of torch)
TRAIN = [
    "torch>=2.1",
    "torchvision>=0.16",
    "timm>=1.0.23",  # DINOv3 qkvb architectures; Block(attn_layer=) for Clay
    "safetensors>=0.4",
    "fvcore>=0.1.5",
    "iopath>=0.1.9",
    # hf:// weights and pretrained=True: the Hub's cache, HF_ENDPOINT, HF_HUB_OFFLINE, HF_TOKEN
    "huggingface_hub>=0.34",
    "scipy>=1.8",  # cubic resampling of BEiT-style relative position tables (SSL4EO data2vec)
]

setup(
    name="d2geo",
    version="0.1.0",
    description="Geospatial foundation models (DINOv2/v3, Prithvi-EO, Clay) as detectron2 backbones",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    packages=find_packages(include=["d2geo", "d2geo.*"]),
    include_package_data=True,
    cmdclass={"build_py": BuildPyWithConfigs},
    # The core runs a model file over scenes (with the `infer` extra: onnxruntime); training,
    # the encoders and config + checkpoint runs need the `train` extra (torch) and detectron2,
    # which is installed from source.
    # the tools (tools/*.py in a source checkout run the same main()s)
    entry_points={"console_scripts": [
        "d2geo-train = d2geo.cli.train:main",
        "d2geo-export = d2geo.cli.export:console_main",
        "d2geo-visualize = d2geo.cli.visualize:console_main",
        "d2geo-convert = d2geo.cli.convert:console_main",
        "d2geo-predict-scene = d2geo.cli.predict_scene:main",
        "d2geo-predict-region = d2geo.cli.predict_region:main",
        "d2geo-show-split = d2geo.cli.show_split:console_main",
    ]},
    install_requires=[
        "numpy>=1.23",
        "rasterio>=1.3",  # GeoTIFF reading; imported only when a file is read
        "pyproj>=3.3",  # ground distances (GSD) in any CRS; imported only when a file is read
        "opencv-python-headless>=4.5",  # quick-looks and augmentations
        "pillow>=9",  # quick-look PNGs
        "tqdm>=4.60",  # progress bars
    ],
    extras_require={
        # inference-only install: tools/predict_scene.py / predict_region.py --model model.onnx (no torch, no
        # detectron2); add `region` for vector outputs (GeoParquet, class maps as polygons)
        "infer": ["onnxruntime>=1.18"],
        "train": TRAIN,
        # export tests (tools/export_model.py and the exported encoders run in onnxruntime)
        "export": ["onnx>=1.16", "onnxruntime>=1.18", "onnxscript>=0.1"],
        "peft": ["peft>=0.13"],
        # panoptic quality (d2geo.model_zoo.evaluation.PanopticQualityEvaluator); parcel polygons
        # (d2geo.data.panoptic; vector files other than GeoJSON mappings also need geopandas)
        "panoptic": ["torchmetrics>=1.3", "shapely>=2.0"],
        # tools/predict_region.py's vector outputs (GeoParquet); class maps as polygons (shapely)
        "region": ["geopandas>=0.14", "pyarrow>=14", "shapely>=2.0"],
        # training from whole scenes and vector labels (d2geo.data.scenes)
        "scenes": ["geopandas>=0.14", "pyogrio>=0.7", "shapely>=2.0"],
        "test": TRAIN + ["pytest>=7", "einops>=0.7", "hypothesis>=6", "peft>=0.13",
                         "onnx>=1.16", "onnxruntime>=1.18", "onnxscript>=0.1", "geopandas>=0.14", "pyarrow>=14",
                         "shapely>=2.0", "pyogrio>=0.7", "torchmetrics>=1.3"],
    },
)
