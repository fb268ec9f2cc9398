"""Local STAC items as rasters: their raster data assets stacked band-wise into a VRT.

Used by region inference (``predict_region``) and by scene registration
(``register_geo_scenes``): one place that reads an item. Items are local files; their assets
are local (``href`` relative to the item, absolute, or ``file://``) or, with ``remote=True``
(``register_geo_scenes``), ``http(s)://`` URLs read through GDAL's ``/vsicurl/`` (HTTP range
requests: a window reads only the blocks it needs). Region inference refuses remote assets.
"""
from __future__ import annotations

import json
import os
from typing import Sequence
from xml.sax.saxutils import escape

from .files import atomic_path

__all__ = ["StacError", "is_stac_item", "stac_item_vrt"]


class StacError(ValueError):
    """A STAC item that cannot be read as one raster (nothing was written)."""


def is_stac_item(path: str) -> bool:
    if not path.lower().endswith(".json"):
        return False
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError):
        return False
    return isinstance(doc, dict) and doc.get("type") == "Feature" and "assets" in doc


def _asset_band_names(asset: dict, key: str) -> list[str]:
    for field in ("eo:bands", "bands", "raster:bands"):
        bands = asset.get(field)
        if isinstance(bands, list) and bands and all(isinstance(b, dict) for b in bands):
            names = [b.get("name") or b.get("common_name") for b in bands]
            if all(names):
                return [str(n) for n in names]
    return [key]


def _asset_scale_offset(asset: dict, n: int) -> list[tuple[float | None, float | None]]:
    out = []
    bands = asset.get("raster:bands") or asset.get("bands") or []
    for i in range(n):
        b = bands[i] if i < len(bands) and isinstance(bands[i], dict) else {}
        out.append((b.get("scale", b.get("raster:scale")), b.get("offset", b.get("raster:offset"))))
    return out


def _is_http(href: str) -> bool:
    return href.lower().startswith(("http://", "https://"))


def _open_asset(item_path: str, key: str, path: str):
    """rasterio dataset of an asset; an http(s) asset that cannot be read is a StacError."""
    import rasterio
    from rasterio.errors import RasterioIOError

    if not path.startswith("/vsicurl/"):
        return rasterio.open(path)
    try:
        return rasterio.open(path)
    except RasterioIOError as e:
        url = path[len("/vsicurl/"):]
        raise StacError(f"{item_path}: asset {key!r} at {url} could not be read ({e}): check that the server "
                        "is reachable from here and serves the file (with HTTP range requests), or download "
                        "the assets and point the hrefs at the local files") from None


def stac_item_vrt(item_path: str, out_path: str, *, assets: Sequence[str] | None = None,
                  remote: bool = False) -> list[str]:
    """Write a VRT stacking the raster assets of a local STAC item (one band per asset band,
    named as the item names them, its ``datetime`` as ``TIFFTAG_DATETIME``); returns the
    files (and URLs) read. Assets at coarser resolutions are resampled (bilinear) to the finest
    grid; assets must share the CRS and the extent (else :class:`StacError`). ``remote``:
    ``http(s)://`` assets are read through ``/vsicurl/`` (else refused); other schemes are
    always refused."""
    with open(item_path, encoding="utf-8") as f:
        item = json.load(f)
    base = os.path.dirname(os.path.abspath(item_path))
    chosen = []
    for key, asset in item["assets"].items():
        if assets is not None and key not in assets:
            continue
        roles = asset.get("roles") or ["data"]
        mtype = str(asset.get("type", "image/tiff"))
        if "data" not in roles or not ("tiff" in mtype or "jp2" in mtype or "vrt" in mtype):
            continue
        href = asset["href"]
        if remote and _is_http(href):
            chosen.append((key, asset, "/vsicurl/" + href))
            continue
        if "://" in href and not href.startswith("file://"):
            fix = ("register_geo_scenes reads http(s) assets" if _is_http(href) else
                   "d2geo reads local files and http(s) URLs (in register_geo_scenes)")
            raise StacError(f"{item_path}: asset {key!r} is remote ({href}); {fix}; here: "
                            f"download the assets and point the hrefs at them")
        href = href[len("file://"):] if href.startswith("file://") else href
        chosen.append((key, asset, href if os.path.isabs(href) else os.path.join(base, href)))
    if assets is not None:
        missing = sorted(set(assets) - {k for k, _, _ in chosen})
        if missing:
            raise StacError(f"{item_path} has no raster data assets {missing}; it has "
                                     f"{sorted(item['assets'])}")
    if not chosen:
        raise StacError(f"{item_path} has no raster data assets (roles 'data', type image/tiff); "
                                 f"its assets are {sorted(item['assets'])}")
    infos = []
    for key, asset, path in chosen:
        if not path.startswith("/vsicurl/") and not os.path.isfile(path):
            raise FileNotFoundError(f"{item_path}: asset {key!r} points at {path}, which does not exist")
        with _open_asset(item_path, key, path) as src:
            infos.append((key, asset, path, src.crs, src.transform, src.width, src.height, src.count,
                          src.dtypes[0], src.nodata, src.scales, src.offsets))
    crs0 = infos[0][3]
    finest = min(infos, key=lambda t: abs(t[4].a))
    _, _, _, _, t0, w0, h0 = finest[:7]
    bounds0 = (t0.c, t0.f, t0.c + t0.a * w0, t0.f + t0.e * h0)
    for key, _, path, crs, t, w, h, *_ in infos:
        if crs != crs0:
            raise StacError(f"{item_path}: asset {key!r} is in {crs}, {infos[0][0]!r} in {crs0}: "
                                     f"reproject the assets to one CRS first")
        b = (t.c, t.f, t.c + t.a * w, t.f + t.e * h)
        if max(abs(x - y) for x, y in zip(b, bounds0)) > abs(t.a) * 0.5:
            raise StacError(f"{item_path}: asset {key!r} covers {b}, {finest[0]!r} {bounds0}: the assets "
                                     f"must cover the same extent")
    dtypes = {i[8] for i in infos}
    dtype = {"uint8": "Byte", "uint16": "UInt16", "int16": "Int16", "uint32": "UInt32", "int32": "Int32",
             "float32": "Float32", "float64": "Float64"}
    vrt_dtype = dtype[infos[0][8]] if len(dtypes) == 1 else "Float32"
    props = item.get("properties", {})
    when = props.get("datetime") or props.get("start_datetime")
    meta = ""
    if when:
        from d2geo.data.geotiff import parse_time

        import datetime as _dt

        t = _dt.datetime.fromtimestamp(parse_time(str(when)), tz=_dt.timezone.utc)
        meta = (f'  <Metadata>\n    <MDI key="TIFFTAG_DATETIME">{t.strftime("%Y:%m:%d %H:%M:%S")}</MDI>\n'
                f'    <MDI key="STAC_ITEM">{escape(str(item.get("id", "")))}</MDI>\n  </Metadata>\n')
    bands_xml = []
    out_dir = os.path.dirname(os.path.abspath(out_path))
    n = 0
    for key, asset, path, crs, t, w, h, count, dt, nodata, scales, offsets in infos:
        names = _asset_band_names(asset, key)
        if len(names) != count:
            names = [f"{key}_{i + 1}" for i in range(count)] if count > 1 else [key]
        so = _asset_scale_offset(asset, count)
        rel = path if path.startswith("/vsicurl/") else os.path.relpath(path, out_dir)
        relative = "0" if path.startswith("/vsicurl/") else "1"
        for i in range(count):
            n += 1
            scale = so[i][0] if so[i][0] is not None else scales[i]
            offset = so[i][1] if so[i][1] is not None else offsets[i]
            nd = f"    <NoDataValue>{nodata!r}</NoDataValue>\n" if nodata is not None else ""
            src_nd = f"      <NODATA>{nodata!r}</NODATA>\n" if nodata is not None else ""
            bands_xml.append(
                f'  <VRTRasterBand dataType="{vrt_dtype}" band="{n}">\n'
                f"    <Description>{escape(names[i])}</Description>\n{nd}"
                f"    <Offset>{offset!r}</Offset>\n    <Scale>{scale!r}</Scale>\n"
                f'    <ComplexSource resampling="bilinear">\n'
                f'      <SourceFilename relativeToVRT="{relative}">{escape(rel)}</SourceFilename>\n'
                f"      <SourceBand>{i + 1}</SourceBand>\n"
                f'      <SrcRect xOff="0" yOff="0" xSize="{w}" ySize="{h}"/>\n'
                f'      <DstRect xOff="0" yOff="0" xSize="{w0}" ySize="{h0}"/>\n{src_nd}'
                f"    </ComplexSource>\n  </VRTRasterBand>\n")
    gt = ", ".join(repr(float(v)) for v in (t0.c, t0.a, t0.b, t0.f, t0.d, t0.e))
    xml = (f'<VRTDataset rasterXSize="{w0}" rasterYSize="{h0}">\n  <SRS>{escape(crs0.to_wkt())}</SRS>\n'
           f"  <GeoTransform>{gt}</GeoTransform>\n{meta}" + "".join(bands_xml) + "</VRTDataset>\n")
    with atomic_path(out_path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(xml)
    return [item_path] + [p[len("/vsicurl/"):] if p.startswith("/vsicurl/") else p for _, _, p, *_ in infos]
