"""Window samplers (random per epoch from seed, grid with stride, label-aware) and
geographic splits without leakage (blocks with a buffer, a label column, polygons; written
to a file and reused)."""
from __future__ import annotations

import json

import shapely

from d2geo.data.scenes import build_scene_datasets, open_scenes, register_geo_scenes, shard
from d2geo.data.scenes.index import reproject_geometry

import scene_fixtures  # this folder's helpers and fixtures
from scene_fixtures import ZONES, write_cog, write_labels

_clean_catalog = scene_fixtures._clean_catalog
two_zones = scene_fixtures.two_zones


def _pixel_box(t, c0, r0, c1, r1):
    (x0, y0), (x1, y1) = t * (c0, r0), t * (c1, r1)
    return shapely.box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))


def _labels(tmp_path, scenes, boxes_per_scene, name="l.geojson", **props_of):
    feats = []
    for path, boxes in zip(scenes, boxes_per_scene):
        s = open_scenes([path])[0]
        for box, props in boxes:
            g = reproject_geometry(_pixel_box(s.transform, *box), s.crs, "EPSG:4326")
            feats.append((g, props))
    return write_labels(tmp_path / name, feats, driver="GeoJSON")


def _windows(dicts):
    return [(d["file_name"], d["window"]) for d in dicts]


def test_random_windows_reproducible_from_seed_per_epoch_and_sharded_by_rank(two_zones, tmp_path):
    labels = _labels(tmp_path, two_zones, [[((10, 10, 290, 290), {"c": "a"})]] * 2)
    kw = dict(task="semantic", classes=["a"], window=64, sampler="random", count=40, epochs=2)
    a = _windows(build_scene_datasets("_r", two_zones, labels, seed=1, **kw)[0]["_r"])
    b = _windows(build_scene_datasets("_r", two_zones, labels, seed=1, **kw)[0]["_r"])
    c = _windows(build_scene_datasets("_r", two_zones, labels, seed=2, **kw)[0]["_r"])
    assert a == b and a != c and len(a) == 80
    assert a[:40] != a[40:]  # each epoch its own draw
    assert {f for f, _ in a} == set(two_zones)  # both scenes drawn
    for _, (col, row, w, h) in a:
        assert 0 <= col <= 300 - 64 and 0 <= row <= 300 - 64 and w == h == 64
    shards = [shard(a, r, 3) for r in range(3)]
    assert sorted(sum(shards, [])) == sorted(a) and all(len(s) in (26, 27) for s in shards)


def test_random_windows_avoid_nodata(tmp_path):
    crs, origin = ZONES[0]
    path = write_cog(tmp_path / "nd.tif", crs=crs, origin=origin, nodata_corner=True)
    labels = _labels(tmp_path, [path], [[((0, 0, 300, 300), {"c": "a"})]])
    dicts = build_scene_datasets("_nd", [path], labels, task="semantic", classes=["a"], window=32,
                                 sampler="random", count=200, min_valid=1.0, seed=0)[0]["_nd"]
    for _, (col, row, w, h) in _windows(dicts):
        assert col >= 60 or row >= 60  # never on the blank 60 px corner


def test_grid_windows_with_stride(two_zones, tmp_path):
    labels = _labels(tmp_path, two_zones, [[((10, 10, 290, 290), {"c": "a"})]] * 2)
    dicts = build_scene_datasets("_g", two_zones, labels, task="semantic", classes=["a"], window=128,
                                 sampler="grid", stride=64)[0]["_g"]
    starts = [0, 64, 128, 172]  # the last one moved to end at the scene edge
    expected = {(p, (c, r, 128, 128)) for p in two_zones for r in starts for c in starts}
    assert set(_windows(dicts)) == expected and len(dicts) == len(expected)


def test_label_aware_windows_do_not_starve_a_rare_class(two_zones, tmp_path):
    common = [((x, y, x + 6, y + 6), {"c": "common"}) for x in range(20, 280, 40) for y in range(20, 280, 40)]
    rare = [((200, 40, 206, 46), {"c": "rare"})]
    labels = _labels(tmp_path, two_zones[:1], [common + rare])
    dicts = build_scene_datasets("_la", two_zones[:1], labels, task="instance", classes=["common", "rare"],
                                 class_key="c", window=32, sampler="random", count=200, label_fraction=0.5,
                                 seed=3)[0]["_la"]
    with_rare = sum(any(a["category_id"] == 1 for a in d["annotations"]) for d in dicts)
    with_any = sum(bool(d["annotations"]) for d in dicts)
    assert with_any >= 100  # at least the label-aware half
    assert with_rare >= 35  # a class drawn uniformly: about half of the 100 label windows (1/200 of area)
    plain = build_scene_datasets("_la", two_zones[:1], labels, task="instance", classes=["common", "rare"],
                                 class_key="c", window=32, sampler="random", count=200, seed=3)[0]["_la"]
    assert sum(any(a["category_id"] == 1 for a in d["annotations"]) for d in plain) < with_rare / 3


def _no_leak(datasets, scenes, min_gap):
    """Windows of different parts of one scene are at least ``min_gap`` metres apart."""
    import numpy as np

    for s in scenes:
        polys = {p: np.array([s.window_polygon(*d["window"]) for d in ds if d["file_name"] == s.paths[0]])
                 for p, ds in datasets.items()}
        parts = list(polys)
        for i, p in enumerate(parts):
            for q in parts[i + 1:]:
                if len(polys[p]) and len(polys[q]):
                    gaps = shapely.distance(polys[p][:, None], polys[q][None, :])
                    assert gaps.min() >= min_gap - 1e-6, (p, q, gaps.min())


def test_block_split_has_no_leakage_and_is_written_and_reused(tmp_path):
    crs, origin = ZONES[0]
    big = [write_cog(tmp_path / "big.tif", crs=crs, origin=origin, size=600)]
    scenes = open_scenes(big)
    labels = _labels(tmp_path, big, [[((5, 5, 595, 595), {"c": "a"})]])
    out = tmp_path / "run"
    names = register_geo_scenes("_blk", big, labels, task="semantic", classes=["a"], window=32, sampler="random",
                                count=300, split={"blocks": 1000, "fractions": {"train": 0.6, "val": 0.4}}, seed=4,
                                output_dir=str(out))
    assert names == ["_blk_train", "_blk_val"]
    from detectron2.data import DatasetCatalog, MetadataCatalog

    datasets = {n: DatasetCatalog.get(n) for n in names}
    assert len(datasets["_blk_train"]) == 300 and len(datasets["_blk_val"]) > 0
    _no_leak(datasets, scenes, min_gap=320.0)  # one window (32 px x 10 m) between the parts
    split_file = MetadataCatalog.get("_blk_train").split_file
    data = json.load(open(split_file))
    kinds = [f["properties"]["kind"] for f in data["features"]]
    assert kinds.count("region") == 2 and kinds.count("window") == 300 + len(datasets["_blk_val"])
    assert data["d2geo_split"]["kind"] == "blocks" and data["d2geo_split"]["seed"] == 4
    # the picture of the split (tools/show_split.py) draws every window of the scene
    from d2geo.data.scenes.preview import draw_split

    counts = draw_split(split_file, big[0], str(out / "split.png"), max_side=200)
    assert counts == {"train": 300, "val": len(datasets["_blk_val"])} and (out / "split.png").stat().st_size > 0
    # reused: the same regions give the same grid windows
    again = build_scene_datasets("_blk2", big, labels, task="semantic", classes=["a"], window=32, sampler="grid",
                                 split=split_file)[0]
    first = build_scene_datasets("_blk3", big, labels, task="semantic", classes=["a"], window=32, sampler="grid",
                                 split={"blocks": 1000, "fractions": {"train": 0.6, "val": 0.4}}, seed=4)[0]
    assert _windows(again["_blk2_val"]) == _windows(first["_blk3_val"])
    # another seed deals the blocks differently
    other = build_scene_datasets("_blk4", big, labels, task="semantic", classes=["a"], window=32, sampler="grid",
                                 split={"blocks": 1000, "fractions": {"train": 0.6, "val": 0.4}}, seed=5)[0]
    assert _windows(other["_blk4_val"]) != _windows(first["_blk3_val"])


def test_column_and_polygon_splits_have_no_leakage(tmp_path):
    crs, origin = ZONES[1]
    big = [write_cog(tmp_path / "big.tif", crs=crs, origin=origin, size=400)]
    scenes = open_scenes(big)
    # features 22 px apart across the middle: less than one window
    west = [((x, y, x + 8, y + 8), {"c": "a", "part": "train"}) for x in range(10, 181, 30) for y in range(10, 390, 30)]
    east = [((x, y, x + 8, y + 8), {"c": "a", "part": "val"}) for x in range(210, 390, 30) for y in range(10, 390, 30)]
    labels = _labels(tmp_path, big, [west + east])
    datasets = build_scene_datasets("_col", big, labels, task="instance", classes=["a"], window=32, sampler="grid",
                                    split={"column": "part"})[0]
    assert set(datasets) == {"_col_train", "_col_val"}
    _no_leak(datasets, scenes, min_gap=320.0)
    for d in datasets["_col_val"]:
        assert d["window"][0] >= 188  # val windows only in the east
    s = scenes[0]
    west_half = reproject_geometry(_pixel_box(s.transform, 0, 0, 210, 400), s.crs, "EPSG:4326")
    east_half = reproject_geometry(_pixel_box(s.transform, 190, 0, 400, 400), s.crs, "EPSG:4326")
    datasets = build_scene_datasets("_poly", big, labels, task="instance", classes=["a"], window=32, sampler="grid",
                                    split={"polygons": {"train": west_half, "val": east_half}})[0]
    _no_leak(datasets, scenes, min_gap=320.0)
    # overlapping halves: each part keeps what lies one window away from the other
    assert all(d["window"][0] + 32 <= 190 - 32 for d in datasets["_poly_train"])
    assert all(d["window"][0] >= 210 + 32 for d in datasets["_poly_val"]) and datasets["_poly_val"]
