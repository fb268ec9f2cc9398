"""The error raised for input tensors and metadata that do not fit an encoder.

Its own module so that :mod:`.base` (the encoder contract) and :mod:`.metadata` (the
metadata schema the contract validates) can both raise it without importing each other.
"""
from __future__ import annotations

__all__ = ["EncoderInputError"]


class EncoderInputError(ValueError):
    """The input tensor or its metadata does not fit the encoder."""
