"""What the command-line tools in ``tools/`` share: quiet third-party warnings, logging,
loading a trained model from a LazyConfig, and the class names a config's data carry (those two
live in :mod:`d2geo.inference.config_model` and are re-exported here).

Import this module before torch and detectron2 (it imports neither at import time) and
call :func:`quiet_third_party_warnings` first thing, so the filters are in place when those
libraries are imported.
"""
from __future__ import annotations

import logging
import os
import warnings
from typing import Mapping, Sequence

__all__ = ["quiet_third_party_warnings", "setup_tool_logging", "plain_log_files", "load_model",  # noqa: F822
           "config_class_names", "parse_modality_inputs", "scene_read_options"]

# (message regex, category, module regex): warnings of libraries d2geo uses that say nothing
# a d2geo user can act on. d2geo's own warnings are never filtered here.
_THIRD_PARTY_WARNINGS = (
    # detectron2 and fvcore script a few helpers with torch.jit.script at import
    (r"`torch\.jit\.script` is deprecated", FutureWarning, r"torch\.jit"),
    (r"`torch\.jit\.script_method` is deprecated", FutureWarning, r"torch\.jit"),
    # detectron2's model zoo imports pkg_resources
    (r"pkg_resources is deprecated as an API", UserWarning, ""),
    (r"Deprecated call to `pkg_resources\.declare_namespace", DeprecationWarning, ""),
    # detectron2's anchor generator calls torch.meshgrid without indexing=
    (r"torch\.meshgrid: in an upcoming release", UserWarning, r"torch\.functional"),
    # iopath/fvcore on Python 3.12+
    (r"datetime\.datetime\.utcfromtimestamp\(\) is deprecated", DeprecationWarning, r"(iopath|fvcore)"),
)
# loggers of libraries whose INFO/WARNING lines are noise on a CPU-only machine
_QUIET_LOGGERS = {
    # "No CUDA runtime is found, using CUDA_HOME=..." when detectron2 collects its environment info
    "torch.utils.cpp_extension": logging.ERROR,
}
# (logger, message fragment): log lines of libraries dropped for the same reason
_DROPPED_LOG_LINES = (
    ("torch.utils.cpp_extension", "No CUDA runtime is found"),
    # detectron2 asks torch.fx whether it is tracing; torch warns about how it asks
    ("torch.fx._symbolic_trace", "is_fx_tracing will return true"),
)


class _DropMessages(logging.Filter):
    def __init__(self, *fragments: str):
        super().__init__()
        self.fragments = fragments

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return not any(f in msg for f in self.fragments)


def quiet_third_party_warnings() -> None:
    """Filter the warnings of torch, detectron2, fvcore and pkg_resources that every run of a
    tool would print and that no user can act on (the list is in this module). d2geo's own
    warnings and every other warning still show. Idempotent; set ``D2GEO_ALL_WARNINGS=1`` to
    see everything."""
    if os.environ.get("D2GEO_ALL_WARNINGS"):
        return
    for message, category, module in _THIRD_PARTY_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)
    for name, level in _QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(level)
    # torch logs these through its own handler; a filter holds even if torch resets the level
    for name, fragment in _DROPPED_LOG_LINES:
        log = logging.getLogger(name)
        if not any(isinstance(f, _DropMessages) for f in log.filters):
            log.addFilter(_DropMessages(fragment))


def setup_tool_logging(level: int = logging.INFO) -> None:
    """One log format for the inference tools (train_net uses detectron2's logger setup)."""
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s: %(message)s")


# an ANSI escape sequence (colours from detectron2's pygments-highlighted config dump and
# termcolor): terminals show them, log files must not hold them
from d2geo.logs import plain_log_files  # noqa: E402,F401  (the tools' name for it)


def __getattr__(name):
    # load_model and config_class_names live in d2geo.inference.config_model (inference uses
    # them too); imported on first use, so importing this module still imports no torch
    if name in ("load_model", "config_class_names"):
        from d2geo.inference import config_model

        return getattr(config_model, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# -- one file per modality on the command line (--input S2L2A=s2.tif --input S1RTC=s1.tif ...) ---------
def _split_pair(text: str, flag: str, example: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip() or not value.strip():
        raise SystemExit(f"{flag} {text!r}: give MODALITY=VALUE, e.g. {flag} {example}")
    return key.strip(), value.strip()


def parse_modality_inputs(values: Sequence[str] | None, flag: str = "--input") -> dict[str, str] | None:
    """``["S2L2A=s2.tif", "S1RTC=s1.tif"]`` -> ``{"S2L2A": "s2.tif", "S1RTC": "s1.tif"}`` (in the
    order given: the order of the stacked channels); None when no value was given. A modality
    named twice, or a value without ``MODALITY=``, is a SystemExit naming the fix."""
    if not values:
        return None
    out: dict[str, str] = {}
    for v in values:
        key, path = _split_pair(v, flag, "S2L2A=S2L2A/tile.tif")
        if key.lower() in {k.lower() for k in out}:
            raise SystemExit(f"{flag}: the modality {key} is given twice ({out.get(key)} and {path}); give each "
                             f"modality once")
        out[key] = path
    return out


def _comma(s: str) -> list[str]:
    return [x.strip() for x in s.split(",") if x.strip()]


def scene_read_options(modalities: Mapping[str, str] | None, *, band_names: Sequence[str] | None,
                       sensor: Sequence[str] | None, dn_scale: Sequence[str] | None) -> dict:
    """``band_names``, ``sensor`` and ``scale`` for the readers from the tools' repeatable
    ``--band-names``, ``--sensor`` and ``--dn-scale``: one plain value each for a one-file (or
    one-file-per-date) scene; ``MODALITY=value`` entries (each modality once) for a scene of
    one file per modality, where one value for all would read e.g. a DEM with Sentinel-2's
    scale."""
    flags = {"band_names": ("--band-names", band_names, "B02,B03,B04"),
             "sensor": ("--sensor", sensor, "sentinel-2-l2a"),
             "scale": ("--dn-scale", dn_scale, "0.0001")}
    out: dict = {}
    for key, (flag, values, example) in flags.items():
        if not values:
            out[key] = None
            continue
        if modalities is None:
            if len(values) > 1:
                raise SystemExit(f"{flag} is given {len(values)} times: give it once (MODALITY=value entries are for "
                                 f"scenes of one file per modality, --input)")
            value = values[0]
            if key == "scale":
                try:
                    value = float(value)
                except ValueError:
                    raise SystemExit(f"{flag} {value!r} is not a number (e.g. {flag} {example})") from None
            elif key == "band_names":
                value = _comma(value)
            out[key] = value
            continue
        per: dict = {}
        for v in values:
            if "=" not in v:
                m0 = next(iter(modalities))
                raise SystemExit(f"{flag} {v!r} is one value for the modalities {', '.join(modalities)}: give it per "
                                 f"modality, {flag} MODALITY=value (e.g. {flag} {m0}={example}), once per modality")
            m, value = _split_pair(v, flag, f"{next(iter(modalities))}={example}")
            match = next((k for k in modalities if k.lower() == m.lower()), None)
            if match is None:
                raise SystemExit(f"{flag} {v!r} names the modality {m}, which is not among the --input modalities "
                                 f"{', '.join(modalities)}")
            if match in per:
                raise SystemExit(f"{flag} gives {match} twice; give each modality once")
            if key == "scale":
                try:
                    value = float(value)
                except ValueError:
                    raise SystemExit(f"{flag} {v!r}: {value!r} is not a number (e.g. {flag} {m}={example})") from None
            elif key == "band_names":
                value = _comma(value)
            per[match] = value
        out[key] = per
    return out
