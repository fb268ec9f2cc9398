"""Panoptic outputs of predict_scene / predict_region (d2geo.inference.panoptic through the one
window loop): the class map, the uint32 instance-id COG (ids unique across windows, strips and
scenes) and the parcels as polygons that rasterize back to the ids; the bad requests refused."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
rasterio = pytest.importorskip("rasterio")
pytest.importorskip("geopandas")
pytest.importorskip("pyarrow")

from rasterio.transform import from_origin  # noqa: E402

from helpers.rasters import write_tif  # noqa: E402

NS, NT = 2, 2  # stuff: forest, water; things: wheat, maize
NAMES = ["forest", "water", "wheat", "maize"]
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class OracleSemHead(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.predictor = torch.nn.Conv2d(1, NS + 1, 1)


class OracleRoiHeads(torch.nn.Module):
    num_classes = NT


class OraclePanoptic(torch.nn.Module):
    """A PanopticFPN stand-in that reads the truth from the image: band 0 is the class (stuff
    i, thing NS + j), band 1 an object number; each window numbers its segments itself (in
    reverse, so window and scene numbers never agree by chance)."""

    def __init__(self, edge: int = 0):
        super().__init__()
        self.sem_seg_head, self.roi_heads = OracleSemHead(), OracleRoiHeads()
        self.edge = edge  # pixels along every window border left unassigned (a model without context there)

    def forward(self, items):
        outs = []
        for it in items:
            cls, obj = it["image"][0].round().long(), it["image"][1].round().long()
            seg = torch.zeros(cls.shape, dtype=torch.int32)
            infos, n = [], 0
            for o in sorted(torch.unique(obj[cls >= NS]).tolist(), reverse=True):
                sel = (obj == o) & (cls >= NS)
                n += 1
                seg[sel] = n
                infos.append({"id": n, "isthing": True, "category_id": int(cls[sel][0]) - NS, "score": 0.5 + o / 100})
            for c in range(NS):
                sel = cls == c
                if sel.any():
                    n += 1
                    seg[sel] = n
                    infos.append({"id": n, "isthing": False, "category_id": c + 1})
            if self.edge:
                e = self.edge
                seg[:e], seg[-e:], seg[:, :e], seg[:, -e:] = 0, 0, 0, 0
            outs.append({"panoptic_seg": (seg, infos)})
        return outs


class SemanticOnly(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.sem_seg_head = OracleSemHead()

    def forward(self, items):
        return [{"sem_seg": torch.zeros(NS + 1, *it["image"].shape[-2:])} for it in items]


def truth_scene(h=150, w=170, seed=0):
    """Classes and object numbers: rectangles of wheat/maize on forest/water, many crossing the
    window seams and strip borders of 64 px windows."""
    rng = np.random.default_rng(seed)
    cls = np.zeros((h, w), np.uint8)
    cls[:, w // 2:] = 1
    obj = np.zeros((h, w), np.int32)
    n = 0
    for y in range(4, h - 20, 24):
        for x in range(3, w - 20, 28):
            n += 1
            dy, dx = rng.integers(10, 20), rng.integers(12, 25)
            obj[y:y + dy, x:x + dx] = n
            cls[y:y + dy, x:x + dx] = NS + (n % NT)
    return cls, obj


def write_scene(path, cls, obj, x0=500_000.0, y0=4_100_000.0):
    img = np.stack([cls, obj, np.full(cls.shape, 0.3)]).astype(np.float32)
    write_tif(str(path), img, crs="EPSG:32631", transform=from_origin(x0, y0, 10, 10), names=["cls", "obj", "b3"])
    return str(path)


def same_partition(truth, ids):
    """Every truth object is one id, every id one truth object, and off-object pixels are 0."""
    pairs = {(int(t), int(i)) for t, i in zip(truth[truth > 0].ravel(), ids[truth > 0].ravel())}
    return ((ids > 0) == (truth > 0)).all() and len(pairs) == len({t for t, _ in pairs}) == len({i for _, i in pairs})


def rasterize_back(fc_or_gdf, like_path):
    from rasterio.features import rasterize
    from shapely.geometry import shape

    with rasterio.open(like_path) as src:
        ids, t = src.read(1), src.transform
    if isinstance(fc_or_gdf, dict):
        shapes = [(shape(f["geometry"]), f["properties"]["instance_id"]) for f in fc_or_gdf["features"]]
    else:
        shapes = list(zip(fc_or_gdf.geometry, fc_or_gdf["instance_id"]))
    back = rasterize(shapes, out_shape=ids.shape, transform=t, fill=0, dtype="uint32")
    return ids, back


@pytest.mark.parametrize("strip", [4096, 64], ids=["one-strip", "column-strips"])
def test_panoptic_scene_outputs_rasterize_back_and_ids_are_unique_across_seams(tmp_path, strip):
    import geopandas as gpd

    from d2geo.inference import predict_scene

    cls, obj = truth_scene()
    scene = write_scene(tmp_path / "scene.tif", cls, obj)
    out = {k: str(tmp_path / n) for k, n in (("semseg_path", "classes.tif"), ("instance_ids_path", "ids.tif"),
                                             ("parcels_path", "parcels.geojson"),
                                             ("parcels_parquet_path", "parcels.parquet"))}
    s = predict_scene(OraclePanoptic(), scene, tile=64, overlap=16, max_strip_width=strip, class_names=NAMES,
                      quicklook=False, units_check=False, **out)
    with rasterio.open(out["semseg_path"]) as src:
        assert (src.read(1) == cls).all()
        assert json.loads(src.tags(1)["class_names"]) == NAMES
    with rasterio.open(out["instance_ids_path"]) as src:
        assert src.dtypes[0] == "uint32" and src.crs.to_epsg() == 32631
        ids = src.read(1)
    # seams: every field (many cross 64 px windows and, with strips, strip borders) has one id
    assert same_partition(obj, ids)
    assert s["objects"] == obj.max() == len(np.unique(ids[ids > 0]))
    fc = json.load(open(out["parcels_path"]))
    ids_cog, back = rasterize_back(fc, out["instance_ids_path"])
    assert (back == ids_cog).mean() >= 0.99
    assert (back == ids_cog).all()  # pixel-centre rule: exactly
    props = fc["features"][0]["properties"]
    assert {"instance_id", "class_id", "class", "score", "pixels", "area_m2"} <= set(props)
    for f in fc["features"]:
        p = f["properties"]
        truth = obj[ids == p["instance_id"]][0]
        assert p["class"] == NAMES[cls[obj == truth][0]] and p["score"] == pytest.approx(0.5 + truth / 100)
        assert p["area_m2"] == p["pixels"] * 100
    gdf = gpd.read_parquet(out["parcels_parquet_path"])
    assert gdf.crs.to_epsg() == 32631 and sorted(gdf["instance_id"]) == sorted(np.unique(ids[ids > 0]).tolist())
    assert (rasterize_back(gdf, out["instance_ids_path"])[1] == ids).all()


def test_each_pixel_comes_from_a_window_with_half_the_overlap_of_context(tmp_path):
    """A model that is blind along its window borders (6 px, under half the 16 px overlap):
    inside the scene no blind pixel is written, so the outputs equal the truth there."""
    from d2geo.inference import predict_scene

    cls, obj = truth_scene()
    scene = write_scene(tmp_path / "scene.tif", cls, obj)
    predict_scene(OraclePanoptic(edge=6), scene, tile=64, overlap=16, max_strip_width=96, class_names=NAMES,
                  quicklook=False, units_check=False, semseg_path=str(tmp_path / "c.tif"),
                  instance_ids_path=str(tmp_path / "i.tif"))
    inner = (slice(6, -6), slice(6, -6))
    assert (rasterio.open(tmp_path / "c.tif").read(1)[inner] == cls[inner]).all()
    assert same_partition(obj[inner], rasterio.open(tmp_path / "i.tif").read(1)[inner])


def test_panoptic_parcels_in_to_crs(tmp_path):
    import geopandas as gpd

    from d2geo.inference import predict_scene

    cls, obj = truth_scene(64, 64)
    scene = write_scene(tmp_path / "scene.tif", cls, obj)
    predict_scene(OraclePanoptic(), scene, tile=64, overlap=16, class_names=NAMES, quicklook=False,
                  units_check=False, to_crs="EPSG:4326", parcels_path=str(tmp_path / "p.geojson"),
                  parcels_parquet_path=str(tmp_path / "p.parquet"))
    gdf = gpd.read_parquet(tmp_path / "p.parquet")
    assert gdf.crs.to_epsg() == 4326
    lon, lat = gdf.geometry.iloc[0].centroid.coords[0]
    assert 0 < lon < 6 and 36 < lat < 38  # UTM 31N, 500 km E / 4100 km N
    assert json.load(open(tmp_path / "p.geojson"))["crs"]["properties"]["name"] == "EPSG:4326"


def test_region_instance_ids_are_unique_across_scenes_and_resume(tmp_path):
    from d2geo.inference.options import InferenceOptions
    from d2geo.inference.panoptic import instance_id_block
    from d2geo.inference.region import predict_region

    cls, obj = truth_scene(96, 96)
    d = tmp_path / "scenes"
    d.mkdir()
    write_scene(d / "a.tif", cls, obj)
    write_scene(d / "b.tif", cls, obj, x0=500_000.0 + 2000)  # beside it, no overlap
    out = tmp_path / "out"
    out.mkdir()
    opts = InferenceOptions(tile=64, overlap=16, num_workers=0, class_names=NAMES, units_check=False)
    s1 = predict_region(OraclePanoptic(), str(d), str(out), opts, key="k", progress=False)
    assert sorted(s1["done"]) == ["a", "b"] and os.path.isfile(s1["mosaic"])
    got = {}
    for sid in ("a", "b"):
        for suffix in (".tif", ".ids.tif", ".parcels.geojson", ".parcels.parquet"):
            assert os.path.isfile(out / (sid + suffix)), sid + suffix
        with rasterio.open(out / f"{sid}.ids.tif") as src:
            got[sid] = src.read(1)
        assert same_partition(obj, got[sid])
        fc = json.load(open(out / f"{sid}.parcels.geojson"))
        assert {f["properties"]["scene"] for f in fc["features"]} == {sid}
        assert (rasterize_back(fc, str(out / f"{sid}.ids.tif"))[1] == got[sid]).all()
    a, b = set(np.unique(got["a"][got["a"] > 0])), set(np.unique(got["b"][got["b"] > 0]))
    assert not a & b, "instance ids repeat across scenes"
    assert min(b) > instance_id_block(2)  # scene b's own block
    s2 = predict_region(OraclePanoptic(), str(d), str(out), opts, key="k", progress=False)
    assert s2["done"] == [] and sorted(s2["skipped"]) == ["a", "b"]
    # a third scene: 2^32 / 3 ids each, so scene b's block moves and b is redone; a's stays
    write_scene(d / "c.tif", cls, obj, x0=500_000.0 + 4000)
    s3 = predict_region(OraclePanoptic(), str(d), str(out), opts, key="k", progress=False)
    assert sorted(s3["done"]) == ["b", "c"] and s3["skipped"] == ["a"]
    ids = {sid: set(np.unique(rasterio.open(out / f"{sid}.ids.tif").read(1))) - {0} for sid in "abc"}
    assert not ids["a"] & ids["b"] and not ids["b"] & ids["c"] and not ids["a"] & ids["c"]


def test_panoptic_outputs_of_a_non_panoptic_model_are_refused(tmp_path):
    from d2geo.inference import predict_scene
    from d2geo.inference.options import InferenceOptions
    from d2geo.inference.region import RegionRequestError, predict_region
    from d2geo.inference.request import SceneRequestError

    cls, obj = truth_scene(64, 64)
    scene = write_scene(tmp_path / "scene.tif", cls, obj)
    with pytest.raises(SceneRequestError, match=r"instance-id raster .* come from a panoptic model .* predicts"):
        predict_scene(SemanticOnly(), scene, tile=64, overlap=16, units_check=False,
                      instance_ids_path=str(tmp_path / "ids.tif"))
    assert not os.path.exists(tmp_path / "ids.tif")
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(RegionRequestError, match=r"panoptic outputs were asked of a model that predicts \['sem_seg'\]"):
        predict_region(SemanticOnly(), scene, str(out),
                       InferenceOptions(tile=64, overlap=16, num_workers=0, panoptic=True, units_check=False),
                       progress=False)


def test_bad_panoptic_requests_are_refused_before_any_window(tmp_path):
    from d2geo.inference import predict_scene
    from d2geo.inference.options import InferenceOptions
    from d2geo.inference.region import RegionRequestError, predict_region
    from d2geo.inference.request import SceneRequestError

    cls, obj = truth_scene(64, 64)
    scene = write_scene(tmp_path / "scene.tif", cls, obj)
    kw = dict(tile=64, overlap=16, units_check=False, quicklook=False)
    with pytest.raises(SceneRequestError, match=r"2 stuff and 2 thing classes, but 3 class names"):
        predict_scene(OraclePanoptic(), scene, class_names=NAMES[:3], semseg_path=str(tmp_path / "c.tif"), **kw)
    with pytest.raises(SceneRequestError, match=r"should end with .parquet"):
        predict_scene(OraclePanoptic(), scene, parcels_parquet_path=str(tmp_path / "p.geojson"), **kw)
    with pytest.raises(SceneRequestError, match=r"same file"):
        predict_scene(OraclePanoptic(), scene, semseg_path=str(tmp_path / "c.tif"),
                      instance_ids_path=str(tmp_path / "c.tif"), **kw)
    with pytest.raises(SceneRequestError, match=r"panoptic=False, but"):
        predict_scene(OraclePanoptic(), scene, panoptic=False, instance_ids_path=str(tmp_path / "i.tif"), **kw)
    with pytest.raises(SceneRequestError, match=r"give parcels_path"):
        predict_scene(OraclePanoptic(), scene, panoptic=True, regions_path=str(tmp_path / "r.geojson"), **kw)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(RegionRequestError, match=r"--polygons polygonizes a semantic class map"):
        predict_region(OraclePanoptic(), scene, str(out),
                       InferenceOptions(tile=64, overlap=16, num_workers=0, polygons=True, units_check=False),
                       progress=False)
    assert sorted(os.listdir(tmp_path)) == ["out", "scene.tif"]
    assert not [f for f in os.listdir(out) if not f.startswith(".")]


def test_scene_with_more_objects_than_its_id_block_is_refused():
    from d2geo.inference.panoptic import PanopticStitcher

    seg = torch.arange(1, 5, dtype=torch.int32).reshape(2, 2)
    infos = [{"id": i, "isthing": True, "category_id": 0, "score": 0.9} for i in range(1, 5)]
    st = PanopticStitcher(2, 2, num_stuff=1, num_things=1, id_base=8, id_block=4, where="scene x")
    with pytest.raises(ValueError, match=r"scene x has more than 3 objects"):
        st.add((seg, infos), 0, 0)
