"""torch.export model files (``.pt2``): the semantic model as a ``torch.export`` program with the
same metadata as the ONNX model file (:mod:`.model_file`).

The archive is the one :func:`torch.export.save` writes, with one more member,
``<archive>/extra/d2geo_model.json`` (what :func:`torch.export.load`'s ``extra_files`` reads as
``d2geo_model.json``): the fields of :data:`~.model_file.FIELDS`, and ``pad_multiple``. The
``graph_sha256`` field is the sha256 of every other member (name and bytes, in name order), so
an edited or corrupted program or weight is refused as in an ONNX file; a CRC error of the zip
is refused the same way.

The program takes one ``(C, H, W)`` float32 image whose height and width are multiples of
``pad_multiple`` (the model's ``size_divisibility``; at least two of them) and returns the
``(K, H, W)`` logits. :class:`Pt2SceneModel` pads a window with the per-band ``pixel_mean``
(zero after the model's normalisation, what detectron2's batching pads with) and crops the
logits, so it returns what the eager model returns for any window size. Reading the metadata
needs no torch; running the program needs torch, not detectron2.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import zipfile
from typing import Sequence

from .model_file import FORMAT_VERSION, ModelFileError, ModelMetadata, check_metadata

logger = logging.getLogger(__name__)

__all__ = ["META_NAME", "is_pt2", "export_pt2_file", "export_pt2_from_config", "read_pt2_metadata", "load_pt2",
           "Pt2SceneModel"]

META_NAME = "d2geo_model.json"
_MAGIC = b"PK\x03\x04"


def is_pt2(path: str) -> bool:
    """A ``.pt2`` name, or a zip archive (an ONNX file is a protobuf, never a zip)."""
    if path.endswith(".pt2"):
        return True
    try:
        with open(path, "rb") as f:
            return f.read(4) == _MAGIC
    except OSError:
        return False


def _meta_member(names: Sequence[str]) -> str | None:
    hits = [n for n in names if n.split("/", 1)[-1] == f"extra/{META_NAME}"]
    return hits[0] if hits else None


def _digest(z: zipfile.ZipFile, skip: str | None) -> str:
    h = hashlib.sha256()
    for name in sorted(z.namelist()):
        if name != skip:
            h.update(name.encode() + b"\0")
            h.update(z.read(name))  # checks the member's CRC too
    return h.hexdigest()


def read_pt2_metadata(path: str) -> tuple[ModelMetadata, dict]:
    """The checked metadata of the ``.pt2`` model file at ``path`` and its pt2-only fields
    (``pad_multiple``)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"model file not found: {path}")
    try:
        with zipfile.ZipFile(path) as z:
            member = _meta_member(z.namelist())
            if member is None:
                raise ModelFileError(f"{path} carries no d2geo metadata (no extra/{META_NAME}): it is a bare "
                                     f"torch.export archive; export it with tools/export_model.py --format pt2")
            values = json.loads(z.read(member).decode("utf-8"))
            digest = _digest(z, member)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError, UnicodeDecodeError) as e:
        raise ModelFileError(f"{path} is not a readable .pt2 model file ({e}): the file is corrupted or truncated; "
                             f"copy it again or export it again (tools/export_model.py --format pt2)") from None
    if not isinstance(values, dict):
        raise ModelFileError(f"{path}: extra/{META_NAME} is not a JSON object")
    meta = check_metadata(values, path)
    if meta.graph_sha256 != digest:
        raise ModelFileError(f"{path} is corrupted or was edited: its program's sha256 is {digest[:16]}..., the "
                             f"file says {meta.graph_sha256[:16]}...; copy it again or export it again")
    pad = values.get("pad_multiple")
    if isinstance(pad, bool) or not isinstance(pad, int) or pad < 1:
        raise ModelFileError(f"{path}: field pad_multiple is {pad!r}, expected a positive int")
    if meta.inputs != ["image"]:
        raise ModelFileError(f"{path}: field inputs is {meta.inputs}: .pt2 model files take the image only")
    return meta, {"pad_multiple": pad}


class _ImageToLogits:
    """``(C, H, W)`` image -> ``(K, H, W)`` logits of a detectron2 semantic model (export side)."""

    def __new__(cls, model):
        import torch

        class ImageToLogits(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.model = model

            def forward(self, image):
                return self.model([{"image": image}])[0]["sem_seg"]

        return ImageToLogits()


def export_pt2_file(model, path: str, cfg=None, *, sample_size: int | None = None, max_size: int = 16384,
                    **fields) -> ModelMetadata:
    """``torch.export`` the semantic ``model`` (eval mode) into the ``.pt2`` model file ``path``,
    height and width dynamic (multiples of the model's size divisibility), with the metadata of
    :func:`~.export_file.model_fields` (``fields``: its keywords). Returns the file's metadata."""
    import torch

    import d2geo

    from .export_file import model_fields

    described = model_fields(model, cfg, **fields)
    if described["task"] != "semantic":
        raise ModelFileError(f"{type(model).__name__} predicts instances: .pt2 model files hold semantic models; "
                             f"export instance models with --format onnx")
    if described["inputs"] != ["image"]:
        raise ModelFileError(".pt2 model files take the image only; this model was described with inputs "
                             f"{described['inputs']} (export it with --format onnx)")
    backbone = model.backbone
    pad = max(1, int((backbone.padding_constraints or {}).get("size_divisibility", backbone.size_divisibility) or 1))
    side = max(2 * pad, int(sample_size or described["window"]) // pad * pad)
    mean = torch.tensor(described["pixel_mean"]).view(-1, 1, 1)
    std = torch.tensor(described["pixel_std"]).view(-1, 1, 1)
    g = torch.Generator().manual_seed(0)
    image = torch.randn(mean.shape[0], side, side, generator=g) * std + mean
    top = max(2, max_size // pad)
    dims = {1: pad * torch.export.Dim("h", min=2, max=top), 2: pad * torch.export.Dim("w", min=2, max=top)}
    wrapper = _ImageToLogits(model).eval()
    with torch.no_grad():
        program = torch.export.export(wrapper, (image,), dynamic_shapes=(dims,))
    buf = io.BytesIO()
    torch.export.save(program, buf)
    values = dict(described, format_version=FORMAT_VERSION, d2geo_version=d2geo.__version__, graph_sha256="")
    check_metadata(values, path)  # before anything is written
    with zipfile.ZipFile(buf, "a") as z:
        prefix = z.namelist()[0].split("/", 1)[0]
        values["graph_sha256"] = _digest(z, None)
        z.writestr(f"{prefix}/extra/{META_NAME}", json.dumps(dict(values, pad_multiple=pad)))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(buf.getvalue())
    os.replace(tmp, path)
    meta, _ = read_pt2_metadata(path)  # the file as written verifies
    logger.info("wrote the .pt2 model file %s (format %s, %d bands, %d classes, window %d, sizes multiples of %d)",
                path, FORMAT_VERSION, len(meta.bands), len(meta.class_names), meta.window, pad)
    return meta


class Pt2SceneModel:
    """A ``.pt2`` model file, called as the window loop calls torch models: a list of
    ``{"image": (C, H, W) tensor, ...}`` -> ``[{"sem_seg": (K, H, W)}]``."""

    array_backend = "torch"

    def __init__(self, path: str, meta: ModelMetadata, program, pad_multiple: int):
        import torch

        self.path, self.meta, self.program, self.pad_multiple = path, meta, program, pad_multiple
        self.pixel_mean = torch.tensor(meta.pixel_mean, dtype=torch.float32).view(-1, 1, 1)
        self.pixel_std = torch.tensor(meta.pixel_std, dtype=torch.float32).view(-1, 1, 1)
        self.bands = list(meta.bands)
        self.output_keys = ("sem_seg",)
        self.training = False

    def modules(self):  # d2geo.inference.request looks for the encoder's band names there
        return iter((self,))

    def eval(self):
        return self

    def to(self, *_args, **_kwargs):
        return self

    def __call__(self, items: Sequence[dict]) -> list[dict]:
        import torch

        out = []
        for item in items:
            image = torch.as_tensor(item["image"]).float()
            if image.ndim != 3 or image.shape[0] != len(self.bands):
                raise ModelFileError(f"{self.path} takes ({len(self.bands)}, H, W) windows, got {tuple(image.shape)}")
            h, w = image.shape[-2:]
            p = self.pad_multiple
            if min(h, w) < 2 * p:
                raise ModelFileError(f"{self.path} runs windows of at least {2 * p} px, got {h}x{w}: the scene is "
                                     f"smaller than that; use the ONNX model file for it")
            ph, pw = -(-h // p) * p, -(-w // p) * p
            if (ph, pw) != (h, w):  # pad with the mean: zero after normalisation, as detectron2 pads
                padded = self.pixel_mean.expand(-1, ph, pw).clone()
                padded[:, :h, :w] = image
                image = padded
            # the program was recorded in float32: an autocast the window loop opens must not reach it
            with torch.no_grad(), torch.autocast(image.device.type, enabled=False):
                logits = self.program(image)
            out.append({"sem_seg": logits[:, :h, :w]})
        return out


def load_pt2(path: str) -> Pt2SceneModel:
    """The ``.pt2`` model file at ``path`` (checked: :func:`read_pt2_metadata`), loaded with
    :func:`torch.export.load`."""
    meta, extra = read_pt2_metadata(path)
    if meta.task != "semantic":
        raise ModelFileError(f"{path}: .pt2 model files hold semantic models, this one says task {meta.task!r}")
    try:
        import torch
    except ImportError:
        raise ModelFileError(f"{path} is a torch.export program: running it needs torch (pip install "
                             f"'d2geo[train]'); an inference-only install runs ONNX model files") from None
    program = torch.export.load(path)
    return Pt2SceneModel(path, meta, program.module(), extra["pad_multiple"])


def export_pt2_from_config(config_file: str, opts: Sequence[str] = (), *, output: str,
                           describe: Sequence[str] | None = None, sample_size: int = 128) -> tuple[str, float]:
    """``tools/export_model.py --format pt2``: the semantic model of the LazyConfig ``config_file``
    (weights from ``train.init_checkpoint``) as the ``.pt2`` model file ``<output>/model.pt2``
    (:func:`~.pt2_file.export_pt2_file`, fields from the config and ``--describe``); returns the
    path and the max abs difference of the file's logits to the eager model's on a synthetic
    sample of side ``sample_size``."""
    import torch
    from detectron2.config import LazyConfig

    from d2geo.engine.export import build_model_from_config, synthetic_sample

    from .export_file import parse_describe

    if not config_file.endswith(".py"):
        raise ModelFileError(f"--format pt2 takes a LazyConfig .py (the class names, mapper and config hash come "
                             f"from it), got {config_file}")
    model, _ = build_model_from_config(config_file, list(opts))
    if not os.path.isfile(config_file):  # a model-zoo name
        from d2geo.model_zoo import get_config_file

        config_file = get_config_file(config_file)
    cfg = LazyConfig.apply_overrides(LazyConfig.load(config_file), list(opts))
    path = os.path.join(output, "model.pt2")
    export_pt2_file(model, path, cfg, **parse_describe(describe))
    image = synthetic_sample(model, sample_size)["image"]
    with torch.no_grad():
        ref = model([{"image": image}])[0]["sem_seg"]
        ours = load_pt2(path)([{"image": image}])[0]["sem_seg"]
    return path, float((ours - ref).abs().max())
