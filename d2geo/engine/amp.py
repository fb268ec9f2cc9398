"""Mixed-precision training on any device, bfloat16 on the CPU included.

detectron2's :class:`~detectron2.engine.AMPTrainer` only runs on CUDA (it asserts
``torch.cuda.is_available()`` and uses ``torch.cuda.amp``). :class:`AutocastTrainer`
does the same job with :func:`torch.autocast` on the device the model lives on:

* ``precision="bfloat16"``: no gradient scaling, bfloat16 has float32's exponent range.
  Matmuls and convolutions run in bfloat16 (fast on CPUs with AMX / AVX512-BF16),
  norms, softmax and losses in float32; the weights stay float32.
* ``precision="float16"``: gradients are scaled with :class:`torch.amp.GradScaler`
  (for GPUs without bfloat16).
* ``precision="auto"`` (the default): bfloat16, unless on such a GPU.

Only the forward pass and the loss run under autocast; the backward pass and the
optimizer step run outside it, as PyTorch recommends. Activation checkpointing
(``GeoBackbone(grad_checkpointing=True)``) recomputes the blocks under the same autocast
state, so the two combine.

In a training script::

    from d2geo.engine.amp import build_trainer
    trainer = build_trainer(model, train_loader, optim, amp=cfg.train.amp)

``cfg.train.amp`` is ``dict(enabled=..., precision="auto")``; with ``enabled=False`` this
returns detectron2's plain :class:`~detectron2.engine.SimpleTrainer`.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Mapping

import torch
from detectron2.engine import SimpleTrainer

from d2geo.precision import resolve_precision  # the one mixed-precision policy (d2geo.precision)

logger = logging.getLogger(__name__)

__all__ = ["AutocastTrainer", "build_trainer", "resolve_precision", "model_device_type"]


def model_device_type(model: torch.nn.Module) -> str:
    """The device type (``"cpu"``, ``"cuda"``, ...) of the model's parameters."""
    module = getattr(model, "module", model)  # DistributedDataParallel
    types = {p.device.type for p in module.parameters()}
    if len(types) != 1:
        raise ValueError(
            f"the model has parameters on device types {sorted(types)}; mixed-precision training "
            "needs the whole model on one device type (call model.to(device) first)"
        )
    return types.pop()


class AutocastTrainer(SimpleTrainer):
    """:class:`~detectron2.engine.SimpleTrainer` with the forward pass under :func:`torch.autocast`.

    Args:
        model, data_loader, optimizer, gather_metric_period, zero_grad_before_forward,
            async_write_metrics: as for ``SimpleTrainer``.
        precision: ``"bfloat16"``, ``"float16"`` (or the dtype), or ``"auto"`` (default):
            bfloat16 unless on a CUDA GPU without it.
        device_type: autocast device type; defaults to the device of the model's parameters.
        grad_scaler: a :class:`torch.amp.GradScaler`; by default one is made for float16
            and none for bfloat16.
    """

    def __init__(self, model, data_loader, optimizer, *, precision: str | torch.dtype = "auto",
                 device_type: str | None = None, grad_scaler: Any = None, gather_metric_period: int = 1,
                 zero_grad_before_forward: bool = False, async_write_metrics: bool = False):
        super().__init__(model, data_loader, optimizer, gather_metric_period=gather_metric_period,
                         zero_grad_before_forward=zero_grad_before_forward,
                         async_write_metrics=async_write_metrics)
        self.device_type = device_type or model_device_type(model)
        self.precision = resolve_precision(precision, self.device_type)
        if not torch.amp.is_autocast_available(self.device_type):
            raise ValueError(f"torch.autocast does not support device type {self.device_type!r}")
        if grad_scaler is None and self.precision == torch.float16:
            grad_scaler = torch.amp.GradScaler(self.device_type)
        self.grad_scaler = grad_scaler
        logger.info("AutocastTrainer: %s autocast on %s%s", str(self.precision).replace("torch.", ""),
                    self.device_type, ", gradient scaling" if grad_scaler is not None else "")

    def run_step(self):
        if not self.model.training:
            raise RuntimeError("AutocastTrainer: the model was put in eval mode; call model.train()")
        t0 = time.perf_counter()
        data = next(self._data_loader_iter)
        data_time = time.perf_counter() - t0

        if self.zero_grad_before_forward:
            self.optimizer.zero_grad()
        with torch.autocast(self.device_type, dtype=self.precision):
            out = self.model(data)
        loss_dict = {"total_loss": out} if isinstance(out, torch.Tensor) else out
        # losses made under autocast may be low precision: add them up in float32
        total = sum(v.float() for v in loss_dict.values())
        if not self.zero_grad_before_forward:
            self.optimizer.zero_grad()
        if self.grad_scaler is not None:
            self.grad_scaler.scale(total).backward()
        else:
            total.backward()
        self.after_backward()

        if self.async_write_metrics:
            self.concurrent_executor.submit(self._write_metrics, loss_dict, data_time, iter=self.iter)
        else:
            self._write_metrics(loss_dict, data_time)

        if self.grad_scaler is not None:
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
        else:
            self.optimizer.step()

    def state_dict(self):
        state = super().state_dict()
        if self.grad_scaler is not None:
            state["grad_scaler"] = self.grad_scaler.state_dict()
        return state

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        if self.grad_scaler is not None and "grad_scaler" in state_dict:
            self.grad_scaler.load_state_dict(state_dict["grad_scaler"])


def build_trainer(model, data_loader, optimizer, *, amp: Mapping[str, Any] | None = None,
                  **kwargs) -> SimpleTrainer:
    """The trainer ``train.amp`` asks for: :class:`AutocastTrainer` when ``amp["enabled"]``
    (``amp["precision"]``, default ``"auto"``), else detectron2's ``SimpleTrainer``.

    Works on the CPU and on GPUs; ``kwargs`` go to the trainer (``gather_metric_period``, ...).
    """
    amp = dict(amp or {})
    if not amp.get("enabled", False):
        return SimpleTrainer(model, data_loader, optimizer, **kwargs)
    unknown = set(amp) - {"enabled", "precision"}
    if unknown:
        raise ValueError(f"unknown train.amp keys {sorted(unknown)}; train.amp takes 'enabled' and 'precision'")
    return AutocastTrainer(model, data_loader, optimizer, precision=amp.get("precision", "auto"), **kwargs)
