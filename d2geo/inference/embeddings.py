"""Encoder patch embeddings as a product: a COG of D bands or GeoParquet of patch cells per scene.

:func:`predict_region_embeddings` runs the encoder of a model (the :class:`~d2geo.encoders.GeoEncoder`
inside a detectron2 model built from a config and checkpoint, or a bare encoder:
:meth:`Embedder.from_encoder`) over every scene of a region and writes, per scene,

* ``<id>.emb.tif``: a float32 Cloud-Optimized GeoTIFF of ``D`` bands (``emb_000`` ..), one pixel
  per *cell*: ``pool x pool`` patches averaged (``pool=1``: one patch). Its grid is the scene's
  transform scaled by ``patch x pool``: a cell's bounds are the ground footprint of its patches.
  NaN = no data (a cell whose centre pixel is invalid, or owned by another scene);
* ``<id>.emb.parquet`` (``formats`` with ``"parquet"``): GeoParquet, one row per written cell:
  ``scene``, ``row``, ``col``, one column per dimension (``emb_000`` ..) and the cell's polygon,
  in the scene's CRS;

and ``pca.npz`` when the embeddings are reduced to ``pca`` dimensions (:class:`PCA`: fitted on a
sample of the first scene's cells, or loaded from ``pca_file``; every scene uses the same
projection, and a rerun reuses it).

Windows: the scene's whole cells (a last row/column of pixels narrower than a cell is left out,
and logged) are cut into windows of ``tile`` px overlapping by ``overlap`` px (both multiples of
the cell); each window's cells go to the output once, by *centre crop*: where two windows overlap
the boundary is the middle of the overlap, so every cell comes from the window in which it lies
farthest from the edge (no blending: averaging embeddings of two contexts would make a vector
that neither context gives). Across overlapping scenes each cell is written by the scene that
owns its centre pixel (:mod:`d2geo.inference.region.ownership`). Outputs are written to
temporary names and renamed when complete; the resume records of :mod:`.region.manifest` carry a
key of the model, the options, the embedding options and the PCA, so a rerun skips finished
scenes and redoes them when any of these changes.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import time
from typing import Any, Sequence

import numpy as np
import torch

from d2geo.data.files import atomic_path
from d2geo.precision import autocast

from .loop import _collate, _WindowReader
from .embedding_pca import PCA, EmbeddingError
from .options import InferenceOptions
from .outputs import scratch_path, to_cog
from .region.inputs import RegionScene, collect_scenes
from .region.manifest import STATE_DIR, OutputLock, done_path, record_done, remove_stale_temporaries, scene_is_done
from .region.ownership import ownership
from .request import check_input_units, check_request, model_pixel_mean, model_pixel_std
from .windows import tile_windows

logger = logging.getLogger(__name__)

__all__ = ["EmbeddingOptions", "EmbeddingError", "Embedder", "PCA", "cell_windows", "embed_scene",
           "predict_region_embeddings", "embedding_outputs", "PCA_FILE"]

PCA_FILE = "pca.npz"
FORMATS = ("cog", "parquet")


@dataclasses.dataclass
class EmbeddingOptions:
    layer: Any = -1  # encoder block to tap: an index (negative from the end) or "layerN"
    norm: bool = True  # apply the encoder's final norm to the tapped tokens
    pool: int = 1  # cells of pool x pool patches (average)
    pca: int | None = None  # reduce to this many dimensions
    pca_file: str | None = None  # a PCA saved by an earlier run (pca.npz) instead of fitting one
    pca_samples: int = 20000  # cells sampled from the first scene to fit the PCA
    pca_windows: int = 32  # windows of the first scene the sample is drawn from (evenly spaced)
    seed: int = 0
    dtype: str = "float32"  # float32, or float16 (GeoParquet; COG needs GDAL >= 3.11)
    formats: Sequence[str] = ("cog",)

    def __post_init__(self):
        self.formats = tuple(self.formats)
        self.validate()

    def validate(self) -> None:
        E = EmbeddingError
        if isinstance(self.layer, str):
            s = self.layer.strip()
            s = s[len("layer"):] if s.startswith("layer") else s
            try:
                self.layer = int(s)
            except ValueError:
                raise E(f"embeddings layer {self.layer!r}: give a block index (-1 for the last block) or "
                        f"'layerN'") from None
        if isinstance(self.layer, bool) or not isinstance(self.layer, int):
            raise E(f"embeddings layer {self.layer!r}: give a block index (-1 for the last block)")
        if isinstance(self.pool, bool) or not isinstance(self.pool, int) or self.pool < 1:
            raise E(f"embeddings pool={self.pool!r}: give a whole number >= 1 (1: one cell per patch)")
        if self.pca is not None and (isinstance(self.pca, bool) or not isinstance(self.pca, int) or self.pca < 1):
            raise E(f"embeddings pca={self.pca!r}: give a number of dimensions >= 1")
        if self.pca_file is not None and not os.path.isfile(self.pca_file):
            raise FileNotFoundError(f"the PCA file {self.pca_file} does not exist (it is the pca.npz an earlier "
                                    f"embeddings run saved beside its outputs)")
        if self.pca_samples < 2 or self.pca_windows < 1:
            raise E(f"pca_samples={self.pca_samples}, pca_windows={self.pca_windows}: use at least 2 samples "
                    f"from at least 1 window")
        if self.dtype not in ("float32", "float16"):
            raise E(f"embeddings dtype {self.dtype!r}: use float32 or float16")
        bad = [f for f in self.formats if f not in FORMATS]
        if bad or not self.formats:
            raise E(f"embeddings formats {list(self.formats)}: use one or both of {', '.join(FORMATS)}")
        if "cog" in self.formats and self.dtype == "float16":
            import rasterio

            if tuple(int(x) for x in rasterio.__gdal_version__.split(".")[:2]) < (3, 11):
                raise E(f"a float16 COG needs GDAL >= 3.11 (rasterio here has GDAL {rasterio.__gdal_version__}): "
                        f"write float16 as GeoParquet only (--embeddings-format parquet), or use float32")

    def key(self) -> dict:
        """What changes the outputs (the resume key hashes it; the PCA enters as its digest)."""
        d = dataclasses.asdict(self)
        d.pop("pca_file")
        d["formats"] = list(self.formats)
        if self.pca is None:
            for k in ("pca_samples", "pca_windows", "seed"):
                d.pop(k)
        return d


def _find_encoder(model):
    from d2geo.encoders.base import GeoEncoder

    m = getattr(model, "module", model)
    if isinstance(m, GeoEncoder):
        return m
    found = [x for x in (m.modules() if hasattr(m, "modules") else ()) if isinstance(x, GeoEncoder)]
    if not found:
        raise EmbeddingError(f"{type(m).__name__} holds no d2geo encoder (GeoEncoder), so it has no patch embeddings "
                             f"to write: give a model built on a GeoBackbone, or an encoder name")
    if len({id(x) for x in found}) > 1:
        logger.warning("%s holds %d encoders; the embeddings are the first one's (%s)", type(m).__name__,
                       len(found), type(found[0]).__name__)
    return found[0]


def _collate_metadata(items) -> dict | None:
    mds = [it.get("metadata") or {} for it in items]
    keys = set(mds[0]) if mds else set()
    if not keys:
        return None
    out = {}
    for k in sorted(keys):
        if k == "wavelengths":
            out[k] = torch.as_tensor(mds[0][k], dtype=torch.float32)
        elif k == "timestamps":
            out[k] = torch.stack([torch.as_tensor(md[k], dtype=torch.float64).reshape(-1) for md in mds])
        else:
            out[k] = torch.stack([torch.as_tensor(md[k], dtype=torch.float32) for md in mds])
    return out


class Embedder(torch.nn.Module):
    """The encoder of a model, with the model's input normalization: window dicts (as the
    region loop reads them) in, ``(B, D, h/pool, w/pool)`` cell embeddings out."""

    def __init__(self, encoder, pixel_mean, pixel_std, *, layer=-1, norm: bool = True, name: str | None = None):
        super().__init__()
        self.encoder = encoder
        self.register_buffer("pixel_mean", torch.as_tensor(np.asarray(pixel_mean, np.float32)).reshape(-1))
        self.register_buffer("pixel_std", torch.as_tensor(np.asarray(pixel_std, np.float32)).reshape(-1))
        self.name = name or type(encoder).__name__
        if encoder.out_strides is not None:
            raise EmbeddingError(f"{type(encoder).__name__} is hierarchical (stages at strides "
                                 f"{list(encoder.out_strides)}): its stages are not one patch grid; patch "
                                 f"embeddings are written for plain ViT encoders")
        from d2geo.encoders.base import EncoderInputError

        try:
            self.layer = encoder.resolve_layers(layer)[0]
        except EncoderInputError as e:
            raise EmbeddingError(f"embeddings layer: {e}") from None
        self.norm = norm
        self.patch_size = int(encoder.patch_size)
        self.dim = int(encoder.feature_dim)

    @classmethod
    def from_model(cls, model, *, layer=-1, norm: bool = True) -> "Embedder":
        enc = _find_encoder(model)
        mean, std = model_pixel_mean(model), model_pixel_std(model)
        if mean is None or std is None:
            raise EmbeddingError(f"{type(getattr(model, 'module', model)).__name__} has no pixel_mean/pixel_std: "
                                 f"build the Embedder with Embedder(encoder, pixel_mean, pixel_std)")
        return cls(enc, mean.detach().cpu(), std.detach().cpu(), layer=layer, norm=norm)

    @classmethod
    def from_encoder(cls, name: str, *, pixel_mean=None, pixel_std=None, stats: str | None = None,
                     weights=None, pretrained: bool = True, layer=-1, norm: bool = True, **overrides) -> "Embedder":
        """A bare encoder (no head): ``build_encoder(name, weights=, pretrained=, **overrides)``
        with the statistics ``stats`` (:func:`d2geo.data.stats.get_stats`, for the encoder's
        bands) or ``pixel_mean`` / ``pixel_std``."""
        from d2geo.encoders import build_encoder

        if (stats is None) == (pixel_mean is None or pixel_std is None):
            raise EmbeddingError("give the input statistics of the encoder either by name (stats=, see "
                                 "d2geo.data.stats.list_stats()) or as pixel_mean= and pixel_std=, not both")
        enc = build_encoder(name, weights=weights, pretrained=pretrained, **overrides)
        if stats is not None:
            from d2geo.data.stats import get_stats

            pixel_mean, pixel_std = get_stats(stats, list(enc.bands))
        if len(np.ravel(pixel_mean)) not in (1, enc.in_chans) or len(np.ravel(pixel_std)) not in (1, enc.in_chans):
            raise EmbeddingError(f"{name} takes {enc.in_chans} bands but the statistics have "
                                 f"{len(np.ravel(pixel_mean))} means and {len(np.ravel(pixel_std))} stds")
        mean = np.broadcast_to(np.ravel(pixel_mean), (enc.in_chans,))
        std = np.broadcast_to(np.ravel(pixel_std), (enc.in_chans,))
        return cls(enc.eval(), mean, std, layer=layer, norm=norm, name=name)

    @torch.no_grad()
    def forward(self, items, pool: int = 1) -> torch.Tensor:
        dev = self.pixel_mean.device
        x = torch.stack([it["image"].to(dev).float() for it in items])
        shape = (1, -1) + (1,) * (x.ndim - 2)
        x = (x - self.pixel_mean.view(shape)) / self.pixel_std.view(shape)
        if getattr(self.encoder, "input_ndim", 2) == 3 and x.ndim == 4:
            x = x.unsqueeze(2)
        md = _collate_metadata(items)
        if md is not None:
            md = {k: v.to(dev) for k, v in md.items()}
        fmap = self.encoder.forward_features(x, layers=[self.layer], norm=self.norm, metadata=md)[0]
        if fmap.ndim == 5:
            if fmap.shape[2] != 1:
                raise EmbeddingError(f"{type(self.encoder).__name__} returns {fmap.shape[2]} time steps of "
                                     f"embeddings; embeddings are written for single-frame runs (one date per scene)")
            fmap = fmap[:, :, 0]
        fmap = fmap.float()
        if pool > 1:
            fmap = torch.nn.functional.avg_pool2d(fmap, pool)
        return fmap


def _axis_crops(n: int, size: int, overlap: int) -> dict[int, tuple[int, int]]:
    starts = sorted({s for s, _ in tile_windows(n, 1, size, overlap)}) if n > size else [0]
    size = min(size, n)
    out = {}
    for i, s in enumerate(starts):
        lo = 0 if i == 0 else (starts[i - 1] + size + s) // 2
        hi = n if i == len(starts) - 1 else (s + size + starts[i + 1]) // 2
        out[s] = (lo, hi)
    return out


def cell_windows(rows: int, cols: int, tile: int, overlap: int) -> list[tuple[int, int, int, int, int, int]]:
    """Windows over a ``rows x cols`` grid of cells, ``tile`` cells a side overlapping by
    ``overlap``: ``(r0, c0, row_lo, row_hi, col_lo, col_hi)``, the window's first cell and the
    cells it writes (centre crop: every cell exactly once)."""
    rs, cs = _axis_crops(rows, tile, overlap), _axis_crops(cols, tile, overlap)
    return [(r, c, *rs[r], *cs[c]) for r in rs for c in cs]


def embedding_outputs(scene: RegionScene, out_dir: str, eopts: EmbeddingOptions) -> dict:
    j = lambda suffix: os.path.join(out_dir, scene.id + suffix)  # noqa: E731
    return {f: j(".emb.tif" if f == "cog" else ".emb.parquet") for f in eopts.formats}


def _grid(embedder: Embedder, scene, opts: InferenceOptions, eopts: EmbeddingOptions):
    """``(cell px, rows, cols, tile cells, overlap cells)``, checked."""
    cell = embedder.patch_size * eopts.pool
    if opts.tile % embedder.patch_size:
        raise EmbeddingError(f"the window (--tile {opts.tile}) is not a whole number of {embedder.patch_size} px "
                             f"patches: use a multiple of {embedder.patch_size}")
    if (opts.tile // embedder.patch_size) % eopts.pool:
        raise EmbeddingError(f"pool {eopts.pool} does not divide the window's {opts.tile // embedder.patch_size} x "
                             f"{opts.tile // embedder.patch_size} patch grid (--tile {opts.tile}, patch "
                             f"{embedder.patch_size}): use a --tile that is a multiple of {cell} px, or another pool")
    if opts.overlap % cell:
        raise EmbeddingError(f"the overlap (--overlap {opts.overlap}) is not a whole number of cells of {cell} px "
                             f"(patch {embedder.patch_size} x pool {eopts.pool}): use a multiple of {cell}")
    rows, cols = scene.height // cell, scene.width // cell
    if rows == 0 or cols == 0:
        raise EmbeddingError(f"scene {scene.id} ({scene.height} x {scene.width} px) is smaller than one cell of "
                             f"{cell} px: use a smaller pool")
    return cell, rows, cols, opts.tile // cell, opts.overlap // cell


def _run_windows(embedder, scene, opts, eopts, wins, cell, device_type):
    """Yield ``(window, (B-th) cells (D, h, w) numpy, valid (h*cell, w*cell))`` per window."""
    read_kw = dict(bands=opts.bands, band_names=opts.band_names, sensor=opts.sensor, scale=opts.scale, fill=opts.fill)
    r_c = [(w[0] * cell, w[1] * cell) for w in wins]
    rows, cols = scene.height // cell, scene.width // cell
    shape = (min(opts.tile, rows * cell), min(opts.tile, cols * cell))
    loader = torch.utils.data.DataLoader(_WindowReader(scene, r_c, shape, read_kw), batch_size=opts.batch_size,
                                         shuffle=False, num_workers=opts.num_workers, collate_fn=_collate,
                                         prefetch_factor=2 if opts.num_workers > 0 else None)
    k = 0
    for batch in loader:
        with autocast(device_type, opts.amp):
            fmaps = embedder([item for _, _, item, _ in batch], pool=eopts.pool)
        fmaps = fmaps.float().cpu().numpy()
        for (_, _, _, valid), f in zip(batch, fmaps):
            yield wins[k], f, np.asarray(valid)
            k += 1


def fit_pca(embedder, scene, opts, eopts, device_type: str = "cpu") -> PCA:
    """A PCA fitted on ``eopts.pca_samples`` cells drawn (seeded) from up to ``pca_windows``
    evenly spaced windows of ``scene`` (each window's own cells, valid centre pixels only)."""
    if eopts.pca > embedder.dim:
        raise EmbeddingError(f"--embeddings-pca {eopts.pca} is more than the {embedder.dim} dimensions of "
                             f"{embedder.name}'s embeddings: use at most {embedder.dim}")
    cell, rows, cols, tc, oc = _grid(embedder, scene, opts, eopts)
    wins = cell_windows(rows, cols, tc, oc)
    pick = np.unique(np.linspace(0, len(wins) - 1, min(eopts.pca_windows, len(wins))).round().astype(int))
    feats = []
    chosen = [wins[i] for i in pick]
    for (r0, c0, rl, rh, cl, ch), f, valid in _run_windows(embedder, scene, opts, eopts, chosen, cell, device_type):
        crop = f[:, rl - r0:rh - r0, cl - c0:ch - c0]
        ok = valid[cell // 2::cell, cell // 2::cell][rl - r0:rh - r0, cl - c0:ch - c0]
        feats.append(crop.reshape(crop.shape[0], -1).T[ok.reshape(-1)])
    x = np.concatenate(feats) if feats else np.zeros((0, embedder.dim), np.float32)
    if len(x) > eopts.pca_samples:
        x = x[np.sort(np.random.default_rng(eopts.seed).choice(len(x), eopts.pca_samples, replace=False))]
    pca = PCA.fit(x, eopts.pca)
    logger.info("PCA of %s embeddings to %d dimensions, fitted on %d cells of %s: %.1f%% of the variance kept",
                embedder.name, eopts.pca, len(x), scene.id, 100 * float(pca.explained_variance_ratio.sum()))
    return pca


def _cog_block(rows: int, cols: int, dim: int, dtype: str, largest: int) -> int:
    """The COG's tile side: a multiple of 16 at most ``largest`` whose pixel-interleaved block of
    ``dim`` bands stays within 16 MiB (GDAL holds whole blocks), and no larger than the grid needs."""
    per_px = dim * np.dtype(dtype).itemsize
    fit = int((16 * 2 ** 20 / per_px) ** 0.5) // 16 * 16
    need = (max(rows, cols) + 15) // 16 * 16
    return max(16, min(largest, fit, need))


def embed_scene(embedder: Embedder, scene: RegionScene, opts: InferenceOptions, eopts: EmbeddingOptions,
                targets: dict, *, scratch_dir: str, owner=None, pca: PCA | None = None,
                device_type: str = "cpu") -> dict:
    """Write the embeddings of ``scene`` to ``targets`` (``{"cog": path, "parquet": path}``)."""
    import rasterio
    from rasterio.windows import Window

    cell, rows, cols, tc, oc = _grid(embedder, scene, opts, eopts)
    if rows * cell != scene.height or cols * cell != scene.width:
        logger.info("%s: %d x %d px is not a whole number of %d px cells: the last %d row(s) and %d column(s) of "
                    "pixels get no cell", scene.id, scene.height, scene.width, cell, scene.height - rows * cell,
                    scene.width - cols * cell)
    dim = pca.components.shape[0] if pca is not None else embedder.dim
    names = [f"emb_{i:03d}" for i in range(dim)]
    transform = scene.transform * scene.transform.scale(cell)
    tags = {"scene": scene.id, "encoder": embedder.name, "layer": str(embedder.layer), "norm": str(embedder.norm),
            "patch_size": str(embedder.patch_size), "pool": str(eopts.pool), "cell_px": str(cell),
            "pca": "none" if pca is None else f"{PCA_FILE} sha256 {pca.digest()}",
            "d2geo_cells": "centre crop of overlapping windows; owner: farthest from its scene edge"}
    cells = None
    n = 0
    with contextlib.ExitStack() as stack:
        dst = None
        if "cog" in targets:
            raw = scratch_path(stack, scratch_dir, scene.id + ".emb.raw")
            bs = _cog_block(rows, cols, dim, eopts.dtype, opts.cog_blocksize)
            dst = stack.enter_context(rasterio.open(
                raw, "w", driver="GTiff", width=cols, height=rows, count=dim, dtype=eopts.dtype, crs=scene.crs,
                transform=transform, nodata=float("nan"), tiled=True, blockxsize=bs, blockysize=bs,
                compress="deflate", predictor=3, interleave="pixel", bigtiff="if_safer"))
            for i, nm in enumerate(names):
                dst.set_band_description(i + 1, nm)
            dst.update_tags(**tags)
        if "parquet" in targets:
            cells = _CellWriter(scratch_path(stack, scratch_dir, scene.id + ".emb.raw", ".parquet"), names, scene,
                                transform, eopts.dtype, tags, rows, cols)
        wins = cell_windows(rows, cols, tc, oc)
        for (r0, c0, rl, rh, cl, ch), f, valid in _run_windows(embedder, scene, opts, eopts, wins, cell, device_type):
            crop = f[:, rl - r0:rh - r0, cl - c0:ch - c0]
            ok = valid[cell // 2::cell, cell // 2::cell][rl - r0:rh - r0, cl - c0:ch - c0].copy()
            if owner is not None:
                ok &= owner(rl * cell, cl * cell, (rh - rl) * cell, (ch - cl) * cell)[cell // 2::cell, cell // 2::cell]
            flat = crop.reshape(crop.shape[0], -1).T
            if pca is not None:
                flat = pca.transform(flat)
            flat = flat.astype(eopts.dtype)
            if dst is not None:
                img = flat.T.reshape(dim, rh - rl, ch - cl).copy()
                img[:, ~ok] = np.nan
                dst.write(img, window=Window(cl, rl, ch - cl, rh - rl))
            if "parquet" in targets:
                rr, cc = np.mgrid[rl:rh, cl:ch]
                keep = ok.reshape(-1)
                cells.write(rr.reshape(-1)[keep], cc.reshape(-1)[keep], flat[keep])
            n += 1
        if dst is not None:
            dst.close()
        final = {}
        if "cog" in targets:
            final["cog"] = stack.enter_context(atomic_path(targets["cog"]))
            to_cog(raw, final["cog"], "average", bs)
        if "parquet" in targets:
            cells.close()
            os.replace(cells.path, stack.enter_context(atomic_path(targets["parquet"])))
    logger.info("%s: %d windows, %d x %d cells of %d dimensions", scene.id, n, rows, cols, dim)
    return {"windows": n, "rows": rows, "cols": cols, "dim": dim}


class _CellWriter:
    """GeoParquet of cells written as the windows come (pyarrow, row groups of :attr:`ROWS` cells:
    the memory does not grow with the scene), with the GeoParquet 1.0 ``geo`` metadata (WKB polygons, the
    scene's CRS as PROJJSON, the bbox of the scene's cell grid)."""

    def __init__(self, path, names, scene, transform, dtype, tags, rows, cols):
        import pyarrow as pa

        self.path, self.names, self.scene, self.transform, self.dtype = path, names, scene, transform, dtype
        fields = [pa.field("scene", pa.string()), pa.field("row", pa.int32()), pa.field("col", pa.int32())]
        fields += [pa.field(n, pa.float16() if dtype == "float16" else pa.float32()) for n in names]
        fields.append(pa.field("geometry", pa.binary()))
        x0, y0 = transform * (0, 0)
        x1, y1 = transform * (cols, rows)
        col = {"encoding": "WKB", "geometry_types": ["Polygon"],
               "bbox": [min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)]}
        if scene.crs is not None:
            from pyproj import CRS

            col["crs"] = CRS.from_user_input(scene.crs.to_wkt()).to_json_dict()
        geo = {"version": "1.0.0", "primary_column": "geometry", "columns": {"geometry": col}}
        self.schema = pa.schema(fields, metadata={b"geo": json.dumps(geo).encode(),
                                                  b"d2geo": json.dumps(tags).encode()})
        self.writer, self.pending, self.n_pending = None, [], 0

    ROWS = 65536  # rows a row group (buffered: a few MB, however large the scene)

    def write(self, rr, cc, vals) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq
        import shapely

        if self.writer is None:
            self.writer = pq.ParquetWriter(self.path, self.schema, compression="zstd", use_dictionary=["scene"],
                                           write_statistics=["scene", "row", "col"])
        x0, y0 = self.transform * (cc, rr)
        x1, y1 = self.transform * (cc + 1, rr + 1)
        geom = shapely.to_wkb(shapely.box(np.minimum(x0, x1), np.minimum(y0, y1), np.maximum(x0, x1),
                                          np.maximum(y0, y1)))
        arrays = [pa.array(np.full(len(rr), self.scene.id)), pa.array(rr.astype(np.int32)),
                  pa.array(cc.astype(np.int32))]
        arrays += [pa.array(vals[:, i].astype(self.dtype)) for i in range(len(self.names))]
        arrays.append(pa.array(list(geom), pa.binary()))
        self.pending.append(pa.Table.from_arrays(arrays, schema=self.schema))
        self.n_pending += len(rr)
        if self.n_pending >= self.ROWS:
            self._flush()

    def _flush(self) -> None:
        import pyarrow as pa

        self.writer.write_table(pa.concat_tables(self.pending), row_group_size=max(self.n_pending, 1))
        self.pending, self.n_pending = [], 0

    def close(self) -> None:
        if self.writer is None:  # no cell written: an empty file with the schema
            self.write(np.zeros(0, int), np.zeros(0, int), np.zeros((0, len(self.names)), self.dtype))
        if self.pending:
            self._flush()
        self.writer.close()


def _scene_checks(embedder, scenes, out_dir, opts, eopts) -> None:
    inputs = {os.path.abspath(p): s.id for s in scenes for p in s.sources}
    if out_dir in {os.path.dirname(p) for p in inputs}:
        raise EmbeddingError(f"the output folder {out_dir} holds the scenes themselves: choose another --output-dir")
    if "parquet" in eopts.formats:
        try:
            import geopandas  # noqa: F401
            import pyarrow  # noqa: F401
        except ImportError:
            raise EmbeddingError("GeoParquet embeddings need geopandas and pyarrow: pip install 'd2geo[region]'") \
                from None
    for s in scenes:
        _grid(embedder, s, opts, eopts)
        outs = embedding_outputs(s, out_dir, eopts)
        clash = [p for p in outs.values() if os.path.abspath(p) in inputs]
        if clash:
            raise EmbeddingError(f"scene {s.id} would write {clash[0]} over an input: choose another --output-dir")
        check_request(embedder, s.files, semseg_path=outs.get("cog", os.path.join(out_dir, s.id + ".emb.tif")),
                      bands=opts.bands, band_names=opts.band_names, sensor=opts.sensor, tile=opts.tile,
                      overlap=opts.overlap, scale=opts.scale)
        check_input_units(embedder, s.paths, s.modalities, height=s.height, width=s.width, tile=opts.tile,
                          overlap=opts.overlap, bands=opts.bands, band_names=opts.band_names, sensor=opts.sensor,
                          scale=opts.scale, allow=not opts.units_check)


def predict_region_embeddings(model, inputs, out_dir: str, opts: InferenceOptions | None = None,
                              eopts: EmbeddingOptions | None = None, *, key: str = "", overwrite: bool = False,
                              device_type: str | None = None, lock: bool = True) -> dict:
    """Write the patch embeddings of every scene of ``inputs`` (see the module docstring).

    ``model``: a detectron2-style model holding a GeoEncoder (its ``pixel_mean``/``pixel_std``
    normalize the input), or an :class:`Embedder`. ``key`` identifies the model (e.g.
    :func:`~d2geo.inference.region.run_key`); the options, embedding options and PCA are added."""
    opts = opts or InferenceOptions()
    eopts = eopts or EmbeddingOptions()
    opts.validate()
    eopts.validate()
    if isinstance(model, Embedder):  # the tap and norm of the options
        embedder = Embedder(model.encoder, model.pixel_mean, model.pixel_std, layer=eopts.layer, norm=eopts.norm,
                            name=model.name)
    else:
        embedder = Embedder.from_model(model, layer=eopts.layer, norm=eopts.norm)
    out_dir = os.path.abspath(out_dir)
    if not os.path.isdir(out_dir):
        raise EmbeddingError(f"the output folder {out_dir} does not exist: create it first (mkdir -p {out_dir})")
    pca_in = PCA.load(eopts.pca_file) if eopts.pca_file else None
    if pca_in is not None:
        if pca_in.components.shape[1] != embedder.dim:
            raise EmbeddingError(f"the PCA {eopts.pca_file} projects {pca_in.components.shape[1]} dimensions but "
                                 f"{embedder.name}'s embeddings have {embedder.dim}: fit it on this encoder's layer")
        if eopts.pca is not None and eopts.pca != pca_in.components.shape[0]:
            raise EmbeddingError(f"--embeddings-pca {eopts.pca} but {eopts.pca_file} has "
                                 f"{pca_in.components.shape[0]} components: drop one of the two")
    elif eopts.pca is not None and eopts.pca > embedder.dim:
        raise EmbeddingError(f"--embeddings-pca {eopts.pca} is more than the {embedder.dim} dimensions of "
                             f"{embedder.name}'s embeddings: use at most {embedder.dim}")
    if device_type is None:
        device_type = embedder.pixel_mean.device.type
    state = os.path.join(out_dir, STATE_DIR)
    os.makedirs(os.path.join(state, "done"), exist_ok=True)
    with OutputLock(out_dir) if lock else contextlib.nullcontext():
        if lock:
            remove_stale_temporaries(out_dir)
        scenes = collect_scenes(inputs, state)
        _scene_checks(embedder, scenes, out_dir, opts, eopts)
        was_training = embedder.training
        embedder.eval()
        try:
            return _run(embedder, scenes, out_dir, opts, eopts, key, overwrite, device_type, pca_in)
        finally:
            embedder.train(was_training)


def _run(embedder, scenes, out_dir, opts, eopts, key, overwrite, device_type, pca) -> dict:
    base = hashlib.sha256(json.dumps([key, opts.output_key(), eopts.key(), embedder.name, embedder.layer],
                                     sort_keys=True, default=str).encode()).hexdigest()
    pca_path = os.path.join(out_dir, PCA_FILE)
    if pca is None and eopts.pca is not None:
        record = pca_path + ".json"
        with contextlib.suppress(OSError, ValueError):
            with open(record, encoding="utf-8") as f:
                if json.load(f).get("key") == base and os.path.isfile(pca_path):
                    pca = PCA.load(pca_path)
                    logger.info("reusing the PCA %s (same model and options)", pca_path)
        if pca is None:
            pca = fit_pca(embedder, scenes[0], opts, eopts, device_type)
            pca.save(pca_path)
            with atomic_path(record) as tmp, open(tmp, "w", encoding="utf-8") as f:
                json.dump({"key": base, "fitted_on": scenes[0].id, "samples": pca.samples}, f)
    elif pca is not None and os.path.abspath(eopts.pca_file) != pca_path:
        pca.save(pca_path)  # beside the outputs: the projection every scene used
    run_key = hashlib.sha256((base + (pca.digest() if pca is not None else "")).encode()).hexdigest()
    todo = [s for s in scenes if overwrite or not scene_is_done(s, out_dir, run_key)]
    skipped = [s.id for s in scenes if s not in todo]
    if skipped:
        logger.info("%d scene(s) already done (manifest matches): %s", len(skipped), ", ".join(skipped[:10]))
    scratch = os.path.join(out_dir, STATE_DIR, "tmp")
    os.makedirs(scratch, exist_ok=True)
    done = []
    for s in todo:
        t0 = time.perf_counter()
        own = ownership(s, scenes)
        outs = embedding_outputs(s, out_dir, eopts)
        embed_scene(embedder, s, opts, eopts, outs, scratch_dir=scratch, owner=own if own else None, pca=pca,
                    device_type=device_type)
        record_done(s, out_dir, run_key, outs, time.perf_counter() - t0)
        done.append(s.id)
    entries = {}
    for s in scenes:
        with contextlib.suppress(OSError, ValueError), open(done_path(out_dir, s.id), encoding="utf-8") as f:
            entries[s.id] = json.load(f)
    with atomic_path(os.path.join(out_dir, "manifest.json")) as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump({"model": run_key, "embeddings": eopts.key(), "scenes": entries}, f, indent=1, sort_keys=True)
    return {"scenes": [s.id for s in scenes], "done": done, "skipped": skipped, "key": run_key,
            "km2": sum(s.km2 for s in scenes),
            "pca": pca_path if pca is not None else None}
