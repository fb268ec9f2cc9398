"""Quick-look PNGs next to the outputs: the scene (true colour where its bands allow) beside
the class map or the instances, with a legend of the classes' colours."""
from __future__ import annotations

import os
from typing import Mapping, Sequence

import numpy as np

from d2geo.data.geotiff import GeoTiffError

from .blend import NODATA_CLASS

__all__ = ["preview_source", "write_quicklook"]


def preview_source(paths, modalities, names, band_names, sensor):
    """The file, band names and sensor the quick-look shows: the scene's first file, or of a
    multi-modality scene its optical file (S2RGB, S2L2A, S2L1C, else the first)."""
    if modalities is None:
        return paths, names, sensor
    import rasterio

    from d2geo.encoders.modalities import MODALITIES

    m = next((k for k in ("S2RGB", "S2L2A", "S2L1C") if k in modalities), next(iter(modalities)))
    spec = MODALITIES.get(m.upper())
    with rasterio.open(modalities[m]) as src:
        count, desc = src.count, src.descriptions
    own = (band_names or {}).get(m) if isinstance(band_names, Mapping) else None
    if own is None and spec is not None and count == len(spec.bands):
        own = spec.bands
    own = list(own) if own is not None else [d or f"band{i + 1}" for i, d in enumerate(desc)]
    msensor = sensor.get(m) if isinstance(sensor, Mapping) else None
    if msensor is None and spec is not None and spec.sensor is not None and spec.name != "S2RGB":
        msensor = spec.sensor
    return [modalities[m]], own, msensor


def _scene_preview(paths, band_names, sensor, max_side: int = 1024):
    """A decimated true-colour (else first-bands) composite of the scene and the decimation."""
    import rasterio

    from d2geo.data.render import composite, composite_channels

    with rasterio.open(paths[0]) as src:
        f = max(1, -(-max(src.height, src.width) // max_side))
        out_shape = (-(-src.height // f), -(-src.width // f))
        try:
            idx, _ = composite_channels(list(band_names), "true", sensor)
        except GeoTiffError:
            idx = [0, 1, 2] if src.count >= 3 else [0, 0, 0]
        data = src.read([i + 1 for i in idx], out_shape=(len(idx),) + out_shape, masked=True,
                        resampling=rasterio.enums.Resampling.nearest)
    valid = ~np.ma.getmaskarray(data).any(axis=0)
    return composite(np.ma.filled(data.astype(np.float32), np.nan), (0, 1, 2), valid=valid), f


def write_quicklook(png_path: str, paths, band_names, sensor, *, class_map_path: str | None = None,
                    instances=(), class_names: Sequence[str] | None = None) -> None:
    """A quick-look PNG; ``instances``: :class:`~.instances.SceneInstance` list, or
    :class:`~.rotated.RotatedDetections` (drawn as rotated outlines)."""
    import rasterio

    from d2geo.data.render import (
        PanelInstance, auto_scale, class_colours, draw_panel, layout_panels, legend_entries, save_png,
    )

    rgb, f = _scene_preview(paths, band_names, sensor)
    s = auto_scale(*rgb.shape[:2], target=256) if max(rgb.shape[:2]) < 512 else 1
    panels = [("scene", draw_panel(rgb, scale=s))]
    legend = []
    if class_map_path is not None:
        with rasterio.open(class_map_path) as src:
            labels = src.read(1, out_shape=rgb.shape[:2], resampling=rasterio.enums.Resampling.nearest)
        n = int(labels[labels != NODATA_CLASS].max()) + 1 if (labels != NODATA_CLASS).any() else 1
        names = list(class_names) if class_names else [f"class {i}" for i in range(n)]
        colours = class_colours(names)
        panels.append(("class map", draw_panel(rgb, scale=s, class_map=labels, colours=colours, alpha=0.75)))
        legend = legend_entries(names, colours, "classes")
    else:
        h, w = rgb.shape[:2]
        drawn = []
        if hasattr(instances, "boxes"):  # RotatedDetections (d2geo.inference.rotated): rotated outlines
            from .rotated import rotated_corners

            ids = [int(k) for k in instances.classes]
            drawn = [PanelInstance(k, corners=c / f) for k, c in zip(ids, rotated_corners(instances.boxes))]
            instances = ()
        else:
            ids = [i.category_id for i in instances]
        for inst in instances:
            if inst.mask is not None:
                crop = inst.mask[::f, ::f]
                m = np.zeros((h, w), bool)
                y0, x0 = inst.y0 // f, inst.x0 // f
                crop = crop[: h - y0, : w - x0]
                m[y0:y0 + crop.shape[0], x0:x0 + crop.shape[1]] = crop
                drawn.append(PanelInstance(inst.category_id, mask=m))
            else:
                drawn.append(PanelInstance(inst.category_id, box=[v / f for v in inst.box]))
        n = max(ids + [0]) + 1
        names = list(class_names) if class_names else [f"object {i}" for i in range(n)]
        colours = class_colours(names)
        panels.append((f"{len(drawn)} instances", draw_panel(rgb, scale=s, instances=drawn, thing_colours=colours)))
        legend = legend_entries(names, colours, "objects")
    title = os.path.basename(paths[0]) + (f" (1:{f})" if f > 1 else "")
    text = "; ".join(f"{e.group}: {e.name} = #{'%02x%02x%02x' % tuple(e.colour)}" for e in legend)
    save_png(png_path, layout_panels([panels], legend=legend, row_titles=[title]), text={"legend": text})
