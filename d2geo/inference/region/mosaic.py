"""``mosaic.vrt``: one GDAL VRT over every scene's class map, in one CRS.

Class maps in another CRS than the mosaic's enter through a warped VRT ``<id>.warped.vrt``
(nearest neighbour). :func:`check_mosaic_crs` refuses, before the run, scenes that cannot be
warped into the mosaic's CRS.
"""
from __future__ import annotations

import json
import math
import os
from typing import Sequence
from xml.sax.saxutils import escape

from d2geo.data.files import atomic_path
from d2geo.data.geotiff import apply_affine

from ..blend import NODATA_CLASS
from .inputs import RegionRequestError, RegionScene
from .ownership import lonlat_box

__all__ = ["write_mosaic_vrt", "check_mosaic_crs", "MOSAIC_MARGIN_DEG"]

#: a scene may lie this far (degrees) outside the area of use of the mosaic's CRS
MOSAIC_MARGIN_DEG = 10.0


def write_mosaic_vrt(scenes: Sequence[RegionScene], out_dir: str, *, crs=None, name: str = "mosaic.vrt") -> str:
    """A VRT over every scene's class map (``<id>.tif``) in ``crs`` (default: the first
    scene's); class maps in other CRSs enter through ``<id>.warped.vrt`` (nearest)."""
    import rasterio
    from rasterio._err import CPLE_BaseError
    from rasterio.crs import CRS
    from rasterio.shutil import copy
    from rasterio.vrt import WarpedVRT

    maps = [(s, os.path.join(out_dir, s.id + ".tif")) for s in scenes]
    maps = [(s, p) for s, p in maps if os.path.isfile(p)]
    if not maps:
        raise RegionRequestError(f"no class maps in {out_dir} to mosaic")
    crs = CRS.from_user_input(crs) if crs is not None else maps[0][0].crs
    sources = []
    for s, p in maps:
        if s.crs == crs:
            src_path = p
        else:
            src_path = os.path.join(out_dir, s.id + ".warped.vrt")
            try:
                with rasterio.open(p) as src, WarpedVRT(src, crs=crs,
                                                        resampling=rasterio.enums.Resampling.nearest) as v:
                    with atomic_path(src_path) as tmp:
                        copy(v, tmp, driver="VRT")
                        _relative_sources(tmp, out_dir)
            except (rasterio.errors.RasterioError, CPLE_BaseError) as e:
                raise _mosaic_crs_error(s, crs, e) from None
        with rasterio.open(src_path) as src:
            sources.append((src_path, src.transform, src.width, src.height, s.crs == crs))
    # the finest pixel of the class maps already in the mosaic's CRS (else of the warped ones)
    native = [abs(t.a) for _, t, _, _, n in sources if n] or [abs(t.a) for _, t, _, _, _ in sources]
    res = min(native)
    sources = [x[:4] for x in sources]
    x0 = min(t.c for _, t, _, _ in sources)
    y1 = max(t.f for _, t, _, _ in sources)
    x1 = max(t.c + t.a * w for _, t, w, _ in sources)
    y0 = min(t.f + t.e * h for _, t, _, h in sources)
    width, height = int(math.ceil((x1 - x0) / res - 1e-6)), int(math.ceil((y1 - y0) / res - 1e-6))
    with rasterio.open(maps[0][1]) as first:
        cmap = first.colormap(1)
        names = first.tags(1).get("class_names")
    colors = "".join(f'      <Entry c1="{c[0]}" c2="{c[1]}" c3="{c[2]}" c4="{c[3]}"/>\n'
                     for _, c in sorted(cmap.items()))
    cats = ""
    if names:
        cats = "    <CategoryNames>\n" + "".join(
            f"      <Category>{escape(n)}</Category>\n" for n in json.loads(names)) + "    </CategoryNames>\n"
    srcs = []
    for path, t, w, h in sources:
        dx, dy = (t.c - x0) / res, (y1 - t.f) / res
        srcs.append(f'    <ComplexSource resampling="nearest">\n'
                    f'      <SourceFilename relativeToVRT="1">{escape(os.path.relpath(path, out_dir))}'
                    f"</SourceFilename>\n"
                    f"      <SourceBand>1</SourceBand>\n"
                    f'      <SrcRect xOff="0" yOff="0" xSize="{w}" ySize="{h}"/>\n'
                    f'      <DstRect xOff="{dx!r}" yOff="{dy!r}" xSize="{w * abs(t.a) / res!r}" '
                    f'ySize="{h * abs(t.e) / res!r}"/>\n'
                    f"      <NODATA>{NODATA_CLASS}</NODATA>\n    </ComplexSource>\n")
    xml = (f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}">\n  <SRS>{escape(crs.to_wkt())}</SRS>\n'
           f"  <GeoTransform>{x0!r}, {res!r}, 0.0, {y1!r}, 0.0, {-res!r}</GeoTransform>\n"
           f'  <VRTRasterBand dataType="Byte" band="1">\n    <Description>class</Description>\n'
           f"    <NoDataValue>{NODATA_CLASS}</NoDataValue>\n    <ColorInterp>Palette</ColorInterp>\n"
           f"    <ColorTable>\n{colors}    </ColorTable>\n{cats}" + "".join(srcs) +
           "  </VRTRasterBand>\n</VRTDataset>\n")
    path = os.path.join(out_dir, name)
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(xml)
    return path


def _mosaic_crs_error(scene: RegionScene, crs, e) -> RegionRequestError:
    return RegionRequestError(
        f"the class map of {scene.id} ({scene.crs}) cannot be warped into the mosaic's CRS {crs} ({e}): the scenes "
        f"lie too far apart for one projected CRS; choose one that covers them all, e.g. --mosaic-crs EPSG:4326 "
        f"(mosaic_crs=)")


def check_mosaic_crs(scenes: Sequence[RegionScene], crs=None) -> None:
    """Raise :class:`RegionRequestError` (before any work) when a scene cannot be warped into
    the mosaic's CRS (default: the first scene's)."""
    from rasterio.crs import CRS
    from rasterio.warp import calculate_default_transform

    import pyproj

    crs = CRS.from_user_input(crs) if crs is not None else scenes[0].crs
    epsg = crs.to_epsg()
    area = (pyproj.CRS.from_epsg(epsg) if epsg else pyproj.CRS.from_wkt(crs.to_wkt())).area_of_use
    for s in scenes:
        if s.crs == crs:
            continue
        if area is not None and not (area.west <= -180 and area.east >= 180):
            w, so, e, n = lonlat_box(s)
            m = MOSAIC_MARGIN_DEG
            if w > area.east + m or e < area.west - m or so > area.north + m or n < area.south - m:
                raise _mosaic_crs_error(s, crs, f"it lies more than {m} degrees outside the area of use of "
                                                f"{crs} ({area.name})")
        try:
            left, top = apply_affine(s.transform, 0, 0)
            right, bottom = apply_affine(s.transform, s.width, s.height)
            calculate_default_transform(s.crs, crs, s.width, s.height, left=float(min(left, right)),
                                        bottom=float(min(top, bottom)), right=float(max(left, right)),
                                        top=float(max(top, bottom)))
        except Exception as e:  # GDAL's CPLE_* errors
            raise _mosaic_crs_error(s, crs, e) from None


def _relative_sources(vrt_path: str, out_dir: str) -> None:
    """Make the source file names of a VRT GDAL wrote relative to ``out_dir``."""
    import re

    text = open(vrt_path, encoding="utf-8").read()

    def rel(m):
        p = m.group(2)
        if os.path.isabs(p):
            p = os.path.relpath(p, out_dir)
        return f'<SourceDataset relativeToVRT="1">{escape(p)}</SourceDataset>'

    text = re.sub(r'<SourceDataset relativeToVRT="(\d)">([^<]*)</SourceDataset>', rel, text)
    with open(vrt_path, "w", encoding="utf-8") as f:
        f.write(text)
