"""Parameter-efficient fine-tuning of d2geo encoders with Hugging Face ``peft`` (LoRA & co.).

``GeoBackbone(..., peft=dict(method="lora", r=8, lora_alpha=16))`` (or a ``peft``
config object) injects the adapters into the encoder in place, with
``peft.inject_adapter_in_model``: module names stay those of the encoder (no
``base_model.model`` wrapper), so layer-wise lr decay, freezing and checkpoint conversion
keep working. Then only the adapter weights, the encoder's LayerNorms (``train_norms``) and
everything outside the encoder (pyramid, heads) train; every original encoder weight is
frozen and stays bit-identical.

Targets
    By default the attention of every transformer block: the fused ``attn.qkv`` projection
    and ``attn.proj`` (all families name them so). Short names (``["qkv", "fc1"]``) are
    looked up inside the blocks only, so Clay's wavelength generator (which also has an
    ``fc1``) is never adapted by accident; a regex string is passed to ``peft`` unchanged.

Fused qkv
    All d2geo families compute q, k and v with one ``Linear(D, 3D)``. LoRA adapts it as one
    matrix: the update ``B @ A`` has rank ``r`` and covers q, k and v together (``B`` is
    ``(3D, r)``), as peft does for any fused projection; merging adds it to the fused weight,
    so merged checkpoints keep the upstream ``qkv`` layout.

Checkpoints
    An adapted encoder's state dict names the frozen weights ``<module>.base_layer.weight``.
    Plain checkpoints (upstream conversions, model-zoo files, merged models) are loaded into
    it by a load hook that maps ``<module>.weight`` to ``<module>.base_layer.weight``.
    :func:`merge_peft` folds the adapters into the weights and removes them, for export and
    for model-zoo files (``tools/convert_checkpoint.py --merge-peft``).
"""
from __future__ import annotations

import logging
import re
from typing import Any, Mapping, Sequence

import torch.nn as nn

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_TARGETS", "apply_peft", "merge_peft", "peft_modules", "has_peft"]

#: short names of the modules adapted by default, inside every transformer block
DEFAULT_TARGETS = ("qkv", "proj")
_IN_BLOCK = re.compile(r"(?:^|\.)(?:blocks|layers)\.\d+\.")


def _import_peft():
    try:
        import peft
    except ImportError as e:  # pragma: no cover - exercised where peft is missing
        raise ImportError(
            "GeoBackbone(peft=...) needs Hugging Face peft, which is not installed; install the "
            "extra: pip install 'd2geo[peft]' (or pip install peft)"
        ) from e
    return peft


def _peft_config(spec: Any):
    """A ``peft.PeftConfig`` from a config object or a mapping ``{"method": ..., **kwargs}``."""
    peft = _import_peft()
    if isinstance(spec, peft.PeftConfig):
        return spec
    if not isinstance(spec, Mapping):
        raise TypeError(f"peft must be a peft config (e.g. peft.LoraConfig(r=8)) or a dict such as "
                        f"dict(method='lora', r=8, lora_alpha=16), got {type(spec).__name__}")
    kwargs = dict(spec)
    method = str(kwargs.pop("method", "lora")).upper()
    mapping = peft.PEFT_TYPE_TO_CONFIG_MAPPING
    known = {k.value if hasattr(k, "value") else str(k): v for k, v in mapping.items()}
    if method not in known:
        raise ValueError(f"peft method {method.lower()!r} is unknown to peft {peft.__version__}; use one of "
                         f"{sorted(m.lower() for m in known)} (d2geo tests 'lora')")
    if method != "LORA":
        logger.warning("peft method %r is untested with d2geo encoders (LoRA is tested)", method.lower())
    for key in ("target_modules", "modules_to_save"):
        if key in kwargs and kwargs[key] is not None and not isinstance(kwargs[key], str):
            kwargs[key] = list(kwargs[key])  # ListConfig / tuple from a LazyConfig
    return known[method](**kwargs)


def _block_linears(encoder: nn.Module, names: Sequence[str]) -> list[str]:
    wanted = set(names)
    return [n for n, m in encoder.named_modules()
            if isinstance(m, nn.Linear) and _IN_BLOCK.search(n) and n.rsplit(".", 1)[-1] in wanted]


def peft_modules(module: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, layer)`` of every peft adapter layer inside ``module``."""
    peft = _import_peft()
    base = peft.tuners.tuners_utils.BaseTunerLayer
    return [(n, m) for n, m in module.named_modules() if isinstance(m, base)]


def has_peft(module: nn.Module) -> bool:
    """Whether ``module`` holds peft adapter layers (False when peft is not installed)."""
    try:
        return bool(peft_modules(module))
    except ImportError:
        return False


def apply_peft(encoder: nn.Module, spec: Any, *, train_norms: bool = True) -> list[str]:
    """Inject the adapters of ``spec`` into ``encoder`` in place and freeze the rest.

    Returns the names of the adapted modules. Trainable afterwards: the adapter weights and,
    with ``train_norms``, the encoder's norm layers (LayerNorm, RMSNorm, ...).
    """
    peft = _import_peft()
    config = _peft_config(spec)
    targets = getattr(config, "target_modules", None)
    if targets is None or (not isinstance(targets, str) and len(targets) == 0):
        targets = DEFAULT_TARGETS
    if not isinstance(targets, str):
        names = _block_linears(encoder, [str(t) for t in targets])
        unknown = [t for t in targets if not _block_linears(encoder, [t])]
        if unknown:
            found = sorted({n.rsplit(".", 1)[-1] for n in _block_linears(encoder, _all_names(encoder))})
            raise ValueError(f"peft target_modules {unknown} name no Linear layer inside the blocks of "
                             f"{type(encoder).__name__}; the blocks have {found}")
        config.target_modules = names
    _route_qkv_through_module(encoder)
    peft.inject_adapter_in_model(config, encoder)
    adapted = [n for n, _ in peft_modules(encoder)]
    if not adapted:
        raise ValueError(f"peft target_modules={targets!r} matched no module of {type(encoder).__name__}")
    for name, p in encoder.named_parameters():
        is_adapter = any(part.startswith(("lora_", "hada_", "lokr_", "ia3_", "vera_")) for part in name.split("."))
        p.requires_grad_(is_adapter)
    if train_norms:
        for m in encoder.modules():
            if "norm" in type(m).__name__.lower():
                for p in m.parameters(recurse=False):
                    p.requires_grad_(True)
    encoder.register_load_state_dict_pre_hook(_plain_keys_to_base_layer)
    n_train = sum(p.numel() for p in encoder.parameters() if p.requires_grad)
    n_all = sum(p.numel() for p in encoder.parameters())
    logger.info("peft %s: %d modules adapted, %d of %d encoder parameters train (%.2f%%)",
                type(config).__name__, len(adapted), n_train, n_all, 100.0 * n_train / max(n_all, 1))
    return adapted


def _route_qkv_through_module(encoder: nn.Module) -> None:
    """timm's ``EvaAttention`` (DINOv3 with q/v biases) computes ``F.linear(x, qkv.weight,
    bias)`` itself, which would bypass an adapter on ``qkv`` without a word; its
    ``qkv_bias_separate`` path calls ``qkv(x)`` and adds the same bias (``qkv`` has none),
    the same result with the adapter on the path."""
    for m in encoder.modules():
        qkv = getattr(m, "qkv", None)
        if (hasattr(m, "qkv_bias_separate") and getattr(m, "q_bias", None) is not None
                and isinstance(qkv, nn.Linear) and qkv.bias is None):
            m.qkv_bias_separate = True


def _all_names(encoder: nn.Module) -> list[str]:
    return [n.rsplit(".", 1)[-1] for n, m in encoder.named_modules() if isinstance(m, nn.Linear)]


def _plain_keys_to_base_layer(module, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
    """Load hook: ``<layer>.weight`` of a plain checkpoint -> ``<layer>.base_layer.weight``."""
    try:
        layers = peft_modules(module)
    except ImportError:
        return
    for name, layer in layers:
        base = layer.get_base_layer()
        for pname, _ in base.named_parameters(recurse=False):
            plain, wrapped = f"{prefix}{name}.{pname}", f"{prefix}{name}.base_layer.{pname}"
            if plain in state_dict and wrapped not in state_dict:
                state_dict[wrapped] = state_dict.pop(plain)


def merge_peft(module: nn.Module) -> int:
    """Fold every peft adapter inside ``module`` into its base layer and put the base layer
    back in its place (plain ``nn.Linear`` and upstream state-dict keys). Returns how many
    layers were merged. Parameters of merged layers are left frozen as they were."""
    layers = peft_modules(module)
    for name, layer in layers:
        layer.merge()
        parent_name, _, child = name.rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module
        setattr(parent, child, layer.get_base_layer())
    if layers:
        logger.info("merged %d peft adapter layers into their base weights", len(layers))
    return len(layers)
