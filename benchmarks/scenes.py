#!/usr/bin/env python
"""Scene-window loading: windows/s of d2geo's training loader vs torchgeo's RasterDataset +
RandomGeoSampler, label lookups as the labels grow, and memory as the scene grows.

    python benchmarks/scenes.py                       # prints a markdown table
    python benchmarks/scenes.py --output docs/benchmarks-scenes.md

Needs torchgeo (``pip install torchgeo==0.8.1``, for this benchmark only; best in a venv
with ``--system-site-packages`` so that it installs nothing into the main environment).

* **Loader**: one COG scene (6 bands int16, DEFLATE, 128 px blocks, 10 m, UTM) of ``--scene``
  px; ``--windows`` random windows of ``--window`` px through a torch DataLoader with
  ``--workers`` workers and batches of 8. d2geo: ``register_geo_scenes`` windows (image only,
  and with the semantic labels rasterized from polygons) read by ``GeoDatasetMapper``;
  torchgeo: ``RasterDataset`` over the same file, ``RandomGeoSampler(size=window px)``,
  ``stack_samples``. Both read full-resolution windows of the same file in its own CRS.
* **Lookups**: time to gather the clipped polygons of one window
  (``d2geo.data.scenes.window_shapes``) with 1k .. 100k label polygons over the scene.
* **Memory**: peak RSS (VmHWM, reset after the imports) of a process that registers and
  reads 200 windows of scenes of growing size (the scene is never read whole).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def write_scene(path: str, size: int, *, seed: int = 0, crs: str = "EPSG:32631") -> str:
    """A smooth 6-band int16 COG written in strips (never held whole)."""
    import rasterio
    from rasterio.shutil import copy as rio_copy
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    rng = np.random.default_rng(seed)
    raw = path + ".raw.tif"
    prof = dict(driver="GTiff", width=size, height=size, count=6, dtype="int16", crs=crs, nodata=-9999,
                transform=from_origin(400_000, 5_000_000, 10, 10), tiled=True, blockxsize=256, blockysize=256)
    with rasterio.open(raw, "w", **prof) as dst:
        for r in range(0, size, 256):
            h = min(256, size - r)
            yy, xx = np.mgrid[r:r + h, 0:size].astype(np.float32)
            base = 1500 + 800 * np.sin(xx / 97.0) * np.cos(yy / 131.0)
            data = np.stack([base * (0.6 + 0.1 * b) + rng.normal(0, 60, base.shape) for b in range(6)])
            dst.write(data.astype(np.int16), window=Window(0, r, size, h))
        for i in range(6):
            dst.set_band_description(i + 1, ["blue", "green", "red", "nir_narrow", "swir_1", "swir_2"][i])
    with rasterio.open(raw) as src:
        rio_copy(src, path, driver="COG", compress="DEFLATE", predictor=2, blocksize=128)
    os.remove(raw)
    return path


def write_labels(path: str, scene: str, n: int, *, seed: int = 0) -> str:
    import geopandas as gpd
    import rasterio
    import shapely

    rng = np.random.default_rng(seed)
    with rasterio.open(scene) as src:
        left, bottom, right, top = src.bounds
        crs = src.crs
    x = rng.uniform(left, right - 200, n)
    y = rng.uniform(bottom, top - 200, n)
    s = rng.uniform(20, 200, n)
    geoms = shapely.box(x, y, x + s, y + s)
    gpd.GeoDataFrame({"c": rng.choice(["a", "b"], n)}, geometry=geoms, crs=crs).to_crs("EPSG:4326").to_file(
        path, engine="pyogrio")
    return path


def _collate(batch):
    return batch


def _cpu_seconds() -> float:
    """CPU time (user + system) of this process and of its finished children (the loader's
    workers, joined when the loader is exhausted): what a loader costs, whatever the load."""
    import resource

    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _timed(loader, count_of) -> tuple[float, float]:
    """(windows/s, CPU ms per window) of one pass over ``loader``; the workers start inside."""
    import gc

    gc.collect()
    cpu, start = _cpu_seconds(), time.perf_counter()
    count = 0
    for b in loader:
        count += count_of(b)
    wall = time.perf_counter() - start
    return count / wall, (_cpu_seconds() - cpu) / count * 1000  # the workers were joined at the end


def d2geo_loader(scene, labels, window, n, workers, with_labels: bool) -> tuple[float, float]:
    import torch

    from d2geo.data.mapper import GeoDatasetMapper
    from d2geo.data.scenes import build_scene_datasets

    datasets, *_ = build_scene_datasets("_bench", [scene], labels, task="semantic", classes=["a", "b"],
                                        class_key="c", window=window, sampler="random", count=n, seed=0)
    dicts = datasets["_bench"]
    if not with_labels:
        for d in dicts:
            d.pop("scene_labels"), d.pop("scene_label_options")
    mapper = GeoDatasetMapper(is_train=True, augmentations=[])

    class DS(torch.utils.data.Dataset):
        def __len__(self):
            return len(dicts)

        def __getitem__(self, i):
            return mapper(dicts[i])

    loader = torch.utils.data.DataLoader(DS(), batch_size=8, num_workers=workers, collate_fn=_collate)
    return _timed(loader, len)


def torchgeo_loader(scene, window, n, workers) -> tuple[float, float]:
    import torch
    from torchgeo.datasets import RasterDataset, stack_samples
    from torchgeo.samplers import RandomGeoSampler

    class Scene(RasterDataset):
        filename_glob = os.path.basename(scene)
        is_image = True

    ds = Scene(paths=os.path.dirname(scene))
    sampler = RandomGeoSampler(ds, size=window, length=n)  # size in pixels (units=PIXELS default)
    loader = torch.utils.data.DataLoader(ds, sampler=sampler, batch_size=8, num_workers=workers,
                                         collate_fn=stack_samples)

    def count_of(b):
        assert b["image"].shape[-1] == window
        return b["image"].shape[0]

    return _timed(loader, count_of)


def lookups(scene, sizes, window, tmp) -> dict:
    """ms per window lookup with ``n`` label polygons at a constant density (about 1000 per
    scene area), spread over an area that grows with ``n`` around the scene: the polygons a
    window meets stay the same, the index grows."""
    import geopandas as gpd
    import shapely

    from d2geo.data.scenes import open_scenes, read_labels, window_shapes

    s = open_scenes([scene])[0]
    left, top = s.transform.c, s.transform.f
    side = s.width * s.pixel_size
    rng = np.random.default_rng(1)
    wins = [(int(rng.integers(0, s.width - window)), int(rng.integers(0, s.height - window)), window, window)
            for _ in range(200)]
    out = {}
    for n in sizes:
        k = max(1.0, np.sqrt(n / 1000))  # the labels' square is k scene sides wide, the scene in its corner
        x = rng.uniform(left, left + k * side, n)
        y = rng.uniform(top - k * side, top, n)
        sz = rng.uniform(20, 200, n)
        gdf = gpd.GeoDataFrame({"c": rng.choice(["a", "b"], n)}, geometry=shapely.box(x, y - sz, x + sz, y), crs=s.crs)
        labels = read_labels(gdf, classes=["a", "b"], class_key="c")
        labels.in_crs(str(s.crs))  # every polygon in the tree
        start = time.perf_counter()
        hits = sum(len(window_shapes(labels, s, w)) for w in wins)
        out[n] = ((time.perf_counter() - start) / len(wins) * 1000, hits / len(wins))
    return out


def memory_child(size: int, window: int, tmp: str) -> None:
    """Peak RSS of registering and reading 200 windows of a scene written beforehand."""
    import rasterio  # noqa: F401  (imported before the baseline, like the rest of the stack)

    from d2geo.data.mapper import GeoDatasetMapper
    from d2geo.data.scenes import build_scene_datasets

    scene, labels = os.path.join(tmp, f"m{size}.tif"), os.path.join(tmp, f"m{size}.gpkg")
    # the peak RSS survives exec (the parent wrote the scene): reset it (Linux), then read VmHWM
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    base = _status_kb("VmRSS")
    datasets, *_ = build_scene_datasets("_m", [scene], labels, task="semantic", classes=["a", "b"], class_key="c",
                                        window=window, sampler="random", count=200, seed=0)
    mapper = GeoDatasetMapper(is_train=True, augmentations=[])
    for d in datasets["_m"]:
        mapper(d)
    peak = _status_kb("VmHWM")
    print(f"{peak / 1024:.0f} {max(peak - base, 0) / 1024:.0f}")


def _status_kb(key: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key + ":"))


def loader_runs(scene, labels, args) -> list[str]:
    """``--runs`` interleaved runs of the three loaders: a table of every run, then the median
    and range of the d2geo / torchgeo ratios."""
    lines = ["| run | load avg (1 min) | d2geo image win/s | d2geo image + labels win/s | torchgeo win/s "
             "| **ratio** | d2geo CPU ms/win | torchgeo CPU ms/win | CPU ratio |", "|---|---|---|---|---|---|---|---|---|"]
    ratios, cpu_ratios = [], []
    for run in range(args.runs):
        load = os.getloadavg()[0]
        d2 = lambda: d2geo_loader(scene, labels, args.window, args.windows, args.workers, False)  # noqa: E731
        tg = lambda: torchgeo_loader(scene, args.window, args.windows, args.workers)  # noqa: E731
        try:
            if run % 2:
                (img_rate, img_cpu), (tg_rate, tg_cpu) = d2(), tg()
            else:
                (tg_rate, tg_cpu), (img_rate, img_cpu) = tg(), d2()
        except ImportError as e:
            return [f"torchgeo is not installed ({e}): pip install torchgeo==0.8.1"]
        lab_rate, _ = d2geo_loader(scene, labels, args.window, args.windows, args.workers, True)
        ratios.append(img_rate / tg_rate)
        cpu_ratios.append(tg_cpu / img_cpu)
        lines.append(f"| {run + 1} | {load:.1f}-{os.getloadavg()[0]:.1f} | {img_rate:.1f} | {lab_rate:.1f} | "
                     f"{tg_rate:.1f} | **{ratios[-1]:.2f}x** | {img_cpu:.2f} | {tg_cpu:.2f} | {cpu_ratios[-1]:.2f}x |")
        print(lines[-1], flush=True)
    lines += ["", f"d2geo / torchgeo windows/s: median **{np.median(ratios):.2f}x**, range {min(ratios):.2f}-"
              f"{max(ratios):.2f}x over {len(ratios)} runs; CPU per window: torchgeo / d2geo median "
              f"{np.median(cpu_ratios):.2f}x, range {min(cpu_ratios):.2f}-{max(cpu_ratios):.2f}x."]
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scene", type=int, default=4096)
    p.add_argument("--window", type=int, default=256)
    p.add_argument("--windows", type=int, default=800)
    p.add_argument("--runs", type=int, default=5, help="interleaved loader runs (pairs)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--label-sizes", default="1000,10000,100000")
    p.add_argument("--memory-sizes", default="2048,4096,8192")
    p.add_argument("--output", default=None)
    p.add_argument("--skip-loader", action="store_true", help="only the lookup and memory sections")
    p.add_argument("--memory-child", nargs=3, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.memory_child:
        memory_child(int(args.memory_child[0]), int(args.memory_child[1]), args.memory_child[2])
        return 0
    import logging

    logging.disable(logging.WARNING)
    tmp = tempfile.mkdtemp(prefix="d2geo_scenes_bench_")
    scene = write_scene(os.path.join(tmp, "scene.tif"), args.scene)
    labels = write_labels(os.path.join(tmp, "labels.gpkg"), scene, 2000)
    lines = [f"Scene {args.scene} px, {args.windows} random windows of {args.window} px, {args.workers} workers, "
             f"batches of 8, {os.cpu_count()} CPUs. Each run is one interleaved pair (d2geo image, d2geo image "
             "+ labels, torchgeo; torchgeo first in odd-numbered runs); CPU is user + system time of the process "
             "and its workers per window.", ""]
    lines += loader_runs(scene, labels, args) if not args.skip_loader else []
    sizes = [int(s) for s in args.label_sizes.split(",") if s]  # empty: no lookup section
    lk = lookups(scene, sizes, args.window, tmp) if sizes else {}
    lines += ["", "| label polygons (constant density) | ms per window lookup (query, clip, pixel coordinates) "
              "| polygons per window |", "|---|---|---|"]
    lines += [f"| {n} | {ms:.2f} | {hits:.0f} |" for n, (ms, hits) in lk.items()]
    lines += ["", "| scene px | peak RSS MB (from a reset after imports) | growth MB over the RSS after imports |",
              "|---|---|---|"]
    for size in [int(s) for s in args.memory_sizes.split(",") if s]:  # empty: no memory section
        m = write_scene(os.path.join(tmp, f"m{size}.tif"), size)
        write_labels(os.path.join(tmp, f"m{size}.gpkg"), m, 1000)
        out = subprocess.run([sys.executable, __file__, "--memory-child", str(size), str(args.window), tmp],
                             capture_output=True, text=True, check=True).stdout.split()
        lines.append(f"| {size} | {out[-2]} | {out[-1]} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write("# Scene-window loading benchmark (benchmarks/scenes.py)\n\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
