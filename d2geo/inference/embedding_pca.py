"""The PCA that reduces encoder embeddings (:mod:`d2geo.inference.embeddings`) to fewer dimensions.

Fitted once (on a sample of the first scene's cells) or loaded from a file, saved beside the
outputs as ``pca.npz`` (``mean``, ``components``, ``explained_variance_ratio``, ``samples``;
``numpy.load`` reads it), so every scene, and a later run, uses the same projection.
"""
from __future__ import annotations

import dataclasses
import hashlib

import numpy as np

from d2geo.data.files import atomic_path

from .region.inputs import RegionRequestError

__all__ = ["PCA", "EmbeddingError"]


class EmbeddingError(RegionRequestError):
    """An embeddings request that cannot work (nothing was written)."""


@dataclasses.dataclass
class PCA:
    """A linear projection ``(x - mean) @ components.T`` to ``k`` dimensions (fitted by SVD,
    signs fixed so that each component's largest coefficient is positive)."""

    mean: np.ndarray  # (D,)
    components: np.ndarray  # (k, D)
    explained_variance_ratio: np.ndarray  # (k,)
    samples: int = 0

    @classmethod
    def fit(cls, x: np.ndarray, k: int) -> "PCA":
        x = np.asarray(x, np.float64)
        n, d = x.shape
        if k > min(n, d):
            raise EmbeddingError(f"a PCA to {k} dimensions needs at least {k} samples of at least {k} dimensions; "
                                 f"got {n} samples of {d}: use --embeddings-pca {min(n, d)} or fewer")
        mean = x.mean(0)
        _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
        vt = vt[:k]
        signs = np.sign(vt[np.arange(k), np.abs(vt).argmax(1)])
        vt = vt * np.where(signs == 0, 1, signs)[:, None]
        var = s ** 2
        return cls(mean.astype(np.float32), vt.astype(np.float32), (var[:k] / max(var.sum(), 1e-30)).astype(np.float32),
                   n)

    def transform(self, x: np.ndarray) -> np.ndarray:
        return (np.asarray(x, np.float32) - self.mean) @ self.components.T

    def save(self, path: str) -> None:
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, mean=self.mean, components=self.components,
                         explained_variance_ratio=self.explained_variance_ratio, samples=np.int64(self.samples))

    @classmethod
    def load(cls, path: str) -> "PCA":
        try:
            with np.load(path, allow_pickle=False) as z:
                p = cls(z["mean"], z["components"], z["explained_variance_ratio"], int(z["samples"]))
        except (OSError, ValueError, KeyError) as e:
            raise EmbeddingError(f"{path} is not a PCA file of d2geo embeddings (mean, components): {e}") from None
        if p.components.ndim != 2 or p.mean.shape != (p.components.shape[1],):
            raise EmbeddingError(f"{path}: components {p.components.shape} do not fit mean {p.mean.shape}")
        return p

    def digest(self) -> str:
        h = hashlib.sha256()
        for a in (self.mean, self.components):
            h.update(np.ascontiguousarray(a, np.float32).tobytes())
        return h.hexdigest()
