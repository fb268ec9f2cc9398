"""The scenes of a region: raster files, folders, text lists, STAC items, one file per modality.

:func:`collect_scenes` turns what the user gives into :class:`RegionScene` objects (grid,
CRS, ground sample distance and the files each scene is read from); :func:`shard_scenes`
deals them to the ranks of a distributed run (largest first, round-robin).
"""
from __future__ import annotations

import dataclasses
import glob
import logging
import os
from typing import Any, Mapping, Sequence

import numpy as np

from d2geo.data.stac import StacError, is_stac_item
from d2geo.data.stac import stac_item_vrt as _stac_item_vrt
from d2geo.data.geotiff import GeoTiffError, apply_affine, check_modality_grid, pixel_gsd

from ..request import SceneRequestError

logger = logging.getLogger(__name__)

__all__ = ["RegionScene", "RegionRequestError", "collect_scenes", "stac_item_vrt", "shard_scenes", "scene_id",
           "RASTER_EXT"]

RASTER_EXT = (".tif", ".tiff", ".vrt", ".jp2")
_RASTER_EXT = RASTER_EXT


class RegionRequestError(SceneRequestError):
    """A region request that cannot work (nothing was written)."""


@dataclasses.dataclass
class RegionScene:
    """One scene of a region: ``paths`` are its dates (one raster each, same grid), or with
    ``modalities`` (``{modality: path}``) its modalities' files, stacked band-wise."""

    id: str
    paths: list
    sources: list  # the files the scene was made from (STAC items and their assets included)
    crs: Any = None
    transform: Any = None
    height: int = 0
    width: int = 0
    gsd: float = 0.0  # metres per pixel (square root of the pixel area)
    modalities: dict | None = None  # one file per modality on one grid (read_modalities)

    @property
    def files(self):
        """What the readers and :func:`~d2geo.inference.request.check_request` take: the modality
        mapping, else the list of dates."""
        return self.modalities if self.modalities is not None else self.paths

    @property
    def km2(self) -> float:
        return self.height * self.width * self.gsd ** 2 / 1e6

    def footprint(self, crs=None):
        """Corners (4, 2) in ``crs`` (default: the scene's)."""
        xs, ys = apply_affine(self.transform, [0, self.width, self.width, 0], [0, 0, self.height, self.height])
        if crs is not None and crs != self.crs:
            from rasterio.warp import transform as warp

            xs, ys = warp(self.crs, crs, list(map(float, xs)), list(map(float, ys)))
        return np.stack([np.asarray(xs, float), np.asarray(ys, float)], axis=1)


def _is_stac_item(path: str) -> bool:
    return is_stac_item(path)


def stac_item_vrt(item_path: str, out_path: str, *, assets: Sequence[str] | None = None) -> list[str]:
    """:func:`d2geo.data.stac.stac_item_vrt`, its refusals as :class:`RegionRequestError`."""
    try:
        return _stac_item_vrt(item_path, out_path, assets=assets)
    except StacError as e:
        raise RegionRequestError(str(e)) from None


def scene_id(path: str) -> str:
    name = os.path.basename(path)
    for ext in _RASTER_EXT + (".json",):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return name


def _check_text_list(path: str) -> None:
    """Refuse a file that is not a text list of scenes (an image of another format, a binary file)."""
    with open(path, "rb") as f:
        head = f.read(8192)
    try:
        if b"\0" in head:
            raise UnicodeDecodeError("utf-8", head, 0, 1, "NUL byte")
        head.decode("utf-8")
    except UnicodeDecodeError:
        raise RegionRequestError(
            f"{path} is not a raster predict_region reads ({', '.join(RASTER_EXT)}), a STAC item nor a text list of "
            f"scenes: give GeoTIFF (or VRT, JPEG 2000) files; a PNG or JPEG has no georeferencing (convert a "
            f"georeferenced one with gdal_translate -of GTiff)") from None


def _line_parts(line: str, base: str) -> list[str]:
    """The entries of a list line: the whole line when it names an existing file (a path with
    spaces), else entries separated by spaces or commas, quotes keeping spaces in a path."""
    import shlex

    whole = line if os.path.isabs(line) else os.path.join(base, line)
    if os.path.isfile(whole):
        return [line]
    try:
        return [p for p in shlex.split(line.replace(",", " ")) if p]
    except ValueError:  # an unbalanced quote: split on spaces
        return [p for p in line.replace(",", " ").split() if p]


def _read_list(path: str) -> list:
    _check_text_list(path)
    base = os.path.dirname(os.path.abspath(path))
    groups: list = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            parts = _line_parts(line, base)
            missing = [p for p in parts if "=" not in p and not os.path.exists(
                p if os.path.isabs(p) else os.path.join(base, p))]
            if missing and " " in line:
                raise RegionRequestError(
                    f"{path}, line {n}: no scene file {', '.join(missing)} ({line!r}); several paths on a line are "
                    f"the dates of one scene: quote a path that holds spaces (\"my scene.tif\")")
            pairs = [p.partition("=") for p in parts]
            if any(sep for _, sep, _ in pairs):  # MODALITY=path entries: one file per modality
                if not all(sep and m and v for m, sep, v in pairs):
                    raise RegionRequestError(
                        f"{path}, line {n}: mixes MODALITY=path entries with plain paths ({line!r}); a line is "
                        f"either the dates of a scene (paths) or its modalities (S2L2A=a.tif S1RTC=b.tif ...)")
                mods: dict[str, str] = {}
                for m, _, v in pairs:
                    if m.lower() in {k.lower() for k in mods}:
                        raise RegionRequestError(f"{path}, line {n}: the modality {m} is named twice")
                    mods[m] = v if os.path.isabs(v) else os.path.join(base, v)
                groups.append(mods)
            else:
                groups.append([p if os.path.isabs(p) else os.path.join(base, p) for p in parts])
    return groups


def _modality_groups(inputs: Mapping[str, str]) -> list[dict[str, str]]:
    """Scenes of one file per modality from ``{modality: file or folder}``: files are one
    scene; folders are matched by file name (``S2L2A/x.tif`` with ``S1RTC/x.tif``, ...), the
    first modality's folder listing the scenes."""
    if not inputs:
        raise RegionRequestError("the modality inputs are empty: give {modality: folder or file}")
    kinds = {m: os.path.isdir(p) for m, p in inputs.items()}
    for m, p in inputs.items():
        if not os.path.exists(p):
            raise FileNotFoundError(f"the {m} input {p} does not exist")
    if len(set(kinds.values())) > 1:
        raise RegionRequestError(
            f"the modality inputs mix folders and files ({', '.join(f'{m}={p}' for m, p in inputs.items())}): give "
            f"a folder per modality (scenes matched by file name) or a file per modality (one scene)")
    if not next(iter(kinds.values())):
        return [{m: os.path.abspath(p) for m, p in inputs.items()}]
    listing = {m: sorted(os.path.basename(p) for p in glob.glob(os.path.join(d, "*"))
                         if p.lower().endswith(_RASTER_EXT)) for m, d in inputs.items()}
    (m0, names0), *others = listing.items()
    if not names0:
        raise RegionRequestError(f"the {m0} folder {inputs[m0]} holds no raster files ({', '.join(_RASTER_EXT)})")
    for m, names in others:
        missing = sorted(set(names0) - set(names))
        if missing:
            raise RegionRequestError(
                f"the {m} folder {inputs[m]} has no {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''} "
                f"of the {m0} folder {inputs[m0]}: every scene needs a file of every modality, under the same file "
                f"name; add them, or move those {m0} files out")
        extra = sorted(set(names) - set(names0))
        if extra:
            logger.warning("%d file(s) of the %s folder %s have no %s file and are not predicted: %s", len(extra), m,
                           inputs[m], m0, ", ".join(extra[:5]) + (" ..." if len(extra) > 5 else ""))
    return [{m: os.path.abspath(os.path.join(inputs[m], name)) for m in inputs} for name in names0]


def collect_scenes(inputs, state_dir: str | None = None, *,
                   stac_assets: Sequence[str] | None = None) -> list[RegionScene]:
    """The scenes named by ``inputs``: raster files, folders (each raster file in it is a
    scene; ``*.json`` STAC items too), text files (one scene a line: one raster or STAC item,
    or several, one per date, separated by spaces or commas, or one file per modality as
    ``MODALITY=path`` entries; ``#`` starts a comment) and STAC item JSON files (their assets
    are stacked into a VRT in ``state_dir``). ``inputs`` may instead map modalities to folders
    (scenes matched by file name across them) or to files (one scene): ``{"S2L2A": "s2/",
    "S1RTC": "s1/", "DEM": "dem/"}``; a scene of modalities is stacked band-wise as
    :func:`~d2geo.data.geotiff.read_modalities` does, its files checked to share one grid."""
    import rasterio

    groups: list = []
    if isinstance(inputs, Mapping):
        groups = _modality_groups({str(m): os.fspath(p) for m, p in inputs.items()})
        inputs = ()
    elif isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    for inp in inputs:
        inp = os.fspath(inp)
        if os.path.isdir(inp):
            found = sorted(p for p in glob.glob(os.path.join(inp, "*"))
                           if p.lower().endswith(_RASTER_EXT) or _is_stac_item(p))
            if not found:
                raise RegionRequestError(f"the folder {inp} holds no raster files ({', '.join(_RASTER_EXT)}) and "
                                         f"no STAC item JSON: give the scenes' folder")
            groups.extend([p] for p in found)
        elif not os.path.isfile(inp):
            raise FileNotFoundError(f"scene input not found: {inp}")
        elif inp.lower().endswith(_RASTER_EXT) or _is_stac_item(inp):
            groups.append([inp])
        elif inp.lower().endswith(".json"):
            raise RegionRequestError(f"{inp} is JSON but not a STAC item (a Feature with assets): give STAC items, "
                                     f"raster files, folders or a text file listing them")
        else:
            groups.extend(_read_list(inp))
    if not groups:
        raise RegionRequestError("no scenes were given")
    scenes, seen = [], {}
    for group in groups:
        if isinstance(group, dict):  # one file per modality
            sid = scene_id(next(iter(group.values())))
            if sid in seen:
                raise RegionRequestError(f"two scenes would write the same outputs {sid}.*: {seen[sid]} and "
                                         f"{next(iter(group.values()))}; rename one")
            seen[sid] = next(iter(group.values()))
            try:
                grid = check_modality_grid(group)
            except GeoTiffError as e:
                raise RegionRequestError(f"scene {sid}: {e}") from None
            if grid["crs"] is None:
                raise RegionRequestError(f"{grid['paths'][0]} has no CRS: region outputs need georeferenced scenes "
                                         f"(assign one with gdal_edit.py -a_srs)")
            crs, transform, h, w = grid["crs"], grid["transform"], grid["height"], grid["width"]
            scenes.append(RegionScene(sid, list(group.values()), list(group.values()), crs, transform, h, w,
                                      pixel_gsd(crs, transform, h, w), modalities=dict(group)))
            continue
        paths, sources = [], []
        for p in group:
            if not os.path.isfile(p):
                raise FileNotFoundError(f"scene file not found: {p}")
            if _is_stac_item(p):
                if state_dir is None:
                    raise ValueError("STAC items need a state_dir for their VRTs")
                vrt = os.path.join(state_dir, "stac", scene_id(p) + ".vrt")
                os.makedirs(os.path.dirname(vrt), exist_ok=True)
                sources.extend(stac_item_vrt(p, vrt, assets=stac_assets))
                paths.append(vrt)
            else:
                paths.append(os.path.abspath(p))
                sources.append(os.path.abspath(p))
        sid = scene_id(group[0])
        if sid in seen:
            raise RegionRequestError(f"two scenes would write the same outputs {sid}.*: {seen[sid]} and {group[0]}; "
                                     f"rename one")
        seen[sid] = group[0]
        with rasterio.open(paths[0]) as src:
            if src.crs is None:
                raise RegionRequestError(f"{paths[0]} has no CRS: region outputs need georeferenced scenes "
                                         f"(assign one with gdal_edit.py -a_srs)")
            crs, transform, h, w = src.crs, src.transform, src.height, src.width
        scenes.append(RegionScene(sid, paths, sources, crs, transform, h, w, pixel_gsd(crs, transform, h, w)))
    return scenes


def shard_scenes(scenes: Sequence[RegionScene], rank: int, world_size: int) -> list[RegionScene]:
    """This rank's scenes: largest first, dealt round-robin (deterministic)."""
    order = sorted(range(len(scenes)), key=lambda i: (-scenes[i].height * scenes[i].width, i))
    return [scenes[i] for k, i in enumerate(order) if k % world_size == rank]
