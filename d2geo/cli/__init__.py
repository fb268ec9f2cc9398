"""d2geo's command-line tools, one module each, installed as console scripts.

==========================  ==========================  =====================================
console script              module                      source-checkout entry point
==========================  ==========================  =====================================
``d2geo-train``             :mod:`d2geo.cli.train`      ``python tools/train_net.py``
``d2geo-export``            :mod:`d2geo.cli.export`     ``python tools/export_model.py``
``d2geo-visualize``         :mod:`d2geo.cli.visualize`  ``python tools/visualize.py``
``d2geo-convert``           :mod:`d2geo.cli.convert`    ``python tools/convert_checkpoint.py``
``d2geo-predict-scene``     ``d2geo.cli.predict_scene``   ``python tools/predict_scene.py``
``d2geo-predict-region``    ``d2geo.cli.predict_region``  ``python tools/predict_region.py``
==========================  ==========================  =====================================

Each module has ``main(argv=None)`` (the console script) and its parser; the work itself is
done by the library (:mod:`d2geo.engine.train_loop`, :mod:`d2geo.engine.export`,
:mod:`d2geo.data.visualize`, :mod:`d2geo.model_zoo.convert`). ``tools/*.py`` only call
``main()``. This package imports nothing heavy: a tool module filters third-party
start-up warnings before it imports torch.
"""
from __future__ import annotations

import importlib

__all__ = ["TOOL_MODULES", "tool_module"]

#: ``tools/<name>.py`` -> the module it runs
TOOL_MODULES = {
    "train_net": "d2geo.cli.train",
    "export_model": "d2geo.cli.export",
    "visualize": "d2geo.cli.visualize",
    "convert_checkpoint": "d2geo.cli.convert",
    "predict_scene": "d2geo.cli.predict_scene",
    "predict_region": "d2geo.cli.predict_region",
    "show_split": "d2geo.cli.show_split",
}


def tool_module(name: str):
    """The module of the tool ``name`` (``"train_net"`` or ``"train"``, ``"d2geo-train"``)."""
    key = name[len("d2geo-"):] if name.startswith("d2geo-") else name
    key = key.replace("-", "_")
    module = TOOL_MODULES.get(key) or (f"d2geo.cli.{key}" if f"d2geo.cli.{key}" in TOOL_MODULES.values() else None)
    if module is None:
        raise KeyError(f"no d2geo tool {name!r}; the tools are {', '.join(TOOL_MODULES)}")
    return importlib.import_module(module)
