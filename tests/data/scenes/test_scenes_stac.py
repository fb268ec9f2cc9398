"""Local STAC items as scenes (d2geo.data.stac, read as predict_region reads them): the windows,
labels and pixels of the item's assets, local or http(s) (a server on 127.0.0.1); unreachable
assets, other remote schemes and other JSON refused."""
from __future__ import annotations

import json
import os

import pytest
import torch

import scene_fixtures  # this folder's helpers and fixtures
from scene_fixtures import rasterio
from test_scenes_sampling import _labels

_clean_catalog = scene_fixtures._clean_catalog
two_zones = scene_fixtures.two_zones

HALVES = [[((10, 10, 150, 290), {"c": "a"}), ((150, 10, 290, 290), {"c": "b"})]]



def _stac_item(path, assets, *, item_id="item"):
    item = {"type": "Feature", "stac_version": "1.0.0", "id": item_id, "geometry": None,
            "properties": {"datetime": "2021-06-01T10:30:00Z"},
            "assets": {k: {"href": os.path.relpath(href, os.path.dirname(path)), "type": "image/tiff; application=geotiff",
                           "roles": ["data"], "eo:bands": [{"name": n} for n in names]}
                       for k, (href, names) in assets.items()}}
    with open(path, "w") as f:
        json.dump(item, f)
    return os.fspath(path)


def test_stac_items_are_scenes_with_the_windows_and_pixels_of_their_assets(two_zones, tmp_path, monkeypatch):
    """A local STAC item (one asset per band, as Earth Search's Sentinel-2 items) registered as a
    scene gives the windows, labels and pixels of its multi-band COG; the bands carry the item's names."""
    from d2geo.data.mapper import GeoDatasetMapper
    from d2geo.data.scenes import build_scene_datasets

    monkeypatch.setenv("D2GEO_STAC_DIR", str(tmp_path / "stac"))
    cog = two_zones[0]
    per_band = []
    with rasterio.open(cog) as src:
        prof = src.profile
        for b in range(src.count):
            p = tmp_path / "assets" / f"band{b + 1}.tif"
            p.parent.mkdir(exist_ok=True)
            with rasterio.open(p, "w", **{**prof, "count": 1}) as dst:
                dst.write(src.read(b + 1), 1)
            per_band.append(os.fspath(p))
    item = _stac_item(tmp_path / "item.json", {f"b{b + 1}": (p, [f"b{b + 1}"]) for b, p in enumerate(per_band)})
    labels = _labels(tmp_path, [cog], HALVES)
    kw = dict(task="semantic", classes=["a", "b"], class_key="c", window=64, sampler="grid")
    from_cog, *_ = build_scene_datasets("_cog", [cog], labels, **kw)
    from_item, *_ = build_scene_datasets("_item", [item], labels, **kw)
    a, b = from_cog["_cog"], from_item["_item"]
    assert b[0]["file_name"].endswith(".vrt") and b[0]["file_name"].startswith(str(tmp_path / "stac"))
    assert [d["window"] for d in a] == [d["window"] for d in b]
    mapper = GeoDatasetMapper(is_train=False)
    for da, db in list(zip(a, b))[::3]:
        ma, mb = mapper(da), mapper(db)
        assert torch.equal(ma["image"], mb["image"]) and torch.equal(ma["sem_seg"], mb["sem_seg"])
    # a text list line of one item works too, and the item's VRT is made once
    listing = tmp_path / "scenes.txt"
    listing.write_text("item.json\n")
    again, *_ = build_scene_datasets("_list", [os.fspath(listing)], labels, **kw)
    assert again["_list"][0]["file_name"] == b[0]["file_name"]
    assert len(os.listdir(tmp_path / "stac")) == 1


class _RangeFiles(__import__("http.server").server.BaseHTTPRequestHandler):
    """Serves the files of ``root`` with HTTP range requests (as GDAL's /vsicurl/ reads COGs);
    records the requests."""

    root = None
    requests: list = []

    def log_message(self, *args):
        pass

    def _file(self):
        path = os.path.join(self.root, self.path.lstrip("/").split("?")[0])
        return path if os.path.isfile(path) else None

    def do_HEAD(self):
        path = self._file()
        self.requests.append(("HEAD", self.path, None))
        if path is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(os.path.getsize(path)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()

    def do_GET(self):
        path = self._file()
        rng = self.headers.get("Range")
        self.requests.append(("GET", self.path, rng))
        if path is None:
            self.send_error(404)
            return
        with open(path, "rb") as f:
            data = f.read()
        if rng and rng.startswith("bytes="):
            a, _, b = rng[len("bytes="):].partition("-")
            a, b = int(a), min(int(b) if b else len(data) - 1, len(data) - 1)
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {a}-{b}/{len(data)}")
            data = data[a:b + 1]
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        self.wfile.write(data)


def _remote_item(path, url, names):
    item = {"type": "Feature", "stac_version": "1.0.0", "id": "remote", "geometry": None,
            "properties": {"datetime": "2021-06-01T10:30:00Z"},
            "assets": {"image": {"href": url, "type": "image/tiff; application=geotiff; profile=cloud-optimized",
                                 "roles": ["data"], "eo:bands": [{"name": n} for n in names]}}}
    with open(path, "w") as f:
        json.dump(item, f)
    return os.fspath(path)


def test_a_stac_item_with_http_assets_reads_windows_through_vsicurl(two_zones, tmp_path, monkeypatch):
    """An item whose asset is an http URL (a local server on 127.0.0.1) gives the windows, labels
    and pixels of the same COG read from disk, reading byte ranges, never the whole file."""
    from http_stub import serve

    from d2geo.data.mapper import GeoDatasetMapper
    from d2geo.data.scenes import build_scene_datasets

    monkeypatch.setenv("D2GEO_STAC_DIR", str(tmp_path / "stac"))
    monkeypatch.setenv("GDAL_DISABLE_READDIR_ON_OPEN", "EMPTY_DIR")
    cog = two_zones[0]
    labels = _labels(tmp_path, [cog], HALVES)
    kw = dict(task="semantic", classes=["a", "b"], class_key="c", window=64, sampler="grid")
    handler = type("Files", (_RangeFiles,), {"root": os.path.dirname(cog), "requests": []})
    with serve(handler) as base:
        item = _remote_item(tmp_path / "remote.json", f"{base}/{os.path.basename(cog)}", ["b1", "b2", "b3"])
        from_cog, *_ = build_scene_datasets("_cog", [cog], labels, **kw)
        from_url, *_ = build_scene_datasets("_url", [item], labels, **kw)
        a, b = from_cog["_cog"], from_url["_url"]
        assert [d["window"] for d in a] == [d["window"] for d in b] and len(a) > 4
        mapper = GeoDatasetMapper(is_train=False)
        for da, db in zip(a[:4], b[:4]):
            ma, mb = mapper(da), mapper(db)
            assert torch.equal(ma["image"], mb["image"]) and torch.equal(ma["sem_seg"], mb["sem_seg"])
    gets = [r for r in handler.requests if r[0] == "GET"]
    assert gets and all(r[2] and r[2].startswith("bytes=") for r in gets)  # range reads only


def test_a_stac_item_with_an_unreachable_http_asset_is_refused_naming_the_asset(tmp_path, monkeypatch):
    import socket

    from d2geo.data.scenes import SceneError, build_scene_datasets

    monkeypatch.setenv("D2GEO_STAC_DIR", str(tmp_path / "stac"))
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    item = _remote_item(tmp_path / "remote.json", f"http://127.0.0.1:{port}/red.tif", ["red"])
    with pytest.raises(SceneError, match=rf"asset 'image' at http://127.0.0.1:{port}/red.tif could not be read "
                                         r"\(.*\): check that the server is reachable"):
        build_scene_datasets("_r", [item], None, task="semantic", classes=["a", "b"], window=64)
    assert not (tmp_path / "stac").exists() or not os.listdir(tmp_path / "stac")


def test_a_stac_item_with_other_remote_assets_or_other_json_is_refused(two_zones, tmp_path, monkeypatch):
    from d2geo.data.scenes import SceneError, build_scene_datasets

    monkeypatch.setenv("D2GEO_STAC_DIR", str(tmp_path / "stac"))
    item = tmp_path / "remote.json"
    item.write_text(json.dumps({"type": "Feature", "id": "r", "properties": {}, "assets": {
        "red": {"href": "s3://bucket/red.tif", "type": "image/tiff", "roles": ["data"]}}}))
    labels = _labels(tmp_path, [two_zones[0]], HALVES)
    with pytest.raises(SceneError, match=r"asset 'red' is remote .*download the assets"):
        build_scene_datasets("_r", [os.fspath(item)], labels, task="semantic", classes=["a", "b"], class_key="c",
                             window=64)
    not_item = tmp_path / "other.json"
    not_item.write_text("{}")
    with pytest.raises(SceneError, match="JSON but not a STAC item"):
        build_scene_datasets("_r", [os.fspath(not_item)], labels, task="semantic", classes=["a", "b"],
                             class_key="c", window=64)
    assert not (tmp_path / "stac").exists() or not os.listdir(tmp_path / "stac")
