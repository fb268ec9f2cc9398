"""Whether the model is being recorded (traced or exported) rather than run, and the per-size
cache that is bypassed while it is.

Its own module so that every encoder module and :mod:`.metadata` can ask without
importing each other.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Hashable

import torch

__all__ = ["is_tracing", "SizeCache"]


def is_tracing() -> bool:
    """True while ``torch.jit.trace`` or ``torch.export`` (also under ``torch.onnx``) records
    the model: value checks that need a concrete tensor are skipped then, and per-size caches
    are bypassed (the recorded model must work at every input size). ``torch.compile`` is
    not included: it guards and recompiles, so the eager code stays correct there."""
    return bool(torch.jit.is_tracing() or torch.compiler.is_exporting())


class SizeCache:
    """Tensors an encoder computes per input size (position tables, attention biases), keyed
    by (grid, device, dtype); the ``capacity`` most recently used are kept. While the model is
    recorded nothing is cached or looked up: the recorded model computes the tensor from the
    input size. :class:`~.base.GeoEncoder` empties its caches when the module is moved or cast.
    """

    def __init__(self, capacity: int):
        self.capacity = max(1, int(capacity))
        self._items: OrderedDict[Hashable, torch.Tensor] = OrderedDict()

    def get(self, key: Callable[[], Hashable], make: Callable[[], torch.Tensor]) -> torch.Tensor:
        """The cached tensor of ``key()``, else ``make()`` (cached). ``key`` is a function so
        that a recorded model never turns symbolic sizes into numbers."""
        if is_tracing():
            return make()
        k = key()
        item = self._items.get(k)
        if item is not None:
            self._items.move_to_end(k)
            return item
        item = self._items[k] = make()
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)
        return item

    def clear(self) -> None:
        self._items.clear()

    def __len__(self) -> int:
        return len(self._items)
