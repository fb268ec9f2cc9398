"""Encoder patch embeddings of a region (d2geo.inference.embeddings, predict_region --embeddings) on
the real TerraMind example tiles with a tiny encoder."""
from __future__ import annotations

import glob
import os

import numpy as np
import pytest
import torch

from helpers import TERRAMIND_EXAMPLES

rasterio = pytest.importorskip("rasterio")
RGB = os.path.join(TERRAMIND_EXAMPLES, "S2RGB")
if not os.path.isdir(RGB):
    pytest.skip(f"the TerraMind example tiles are not in {TERRAMIND_EXAMPLES}", allow_module_level=True)

from d2geo.inference import InferenceOptions  # noqa: E402
from d2geo.inference.embeddings import (  # noqa: E402
    PCA, Embedder, EmbeddingError, EmbeddingOptions, cell_windows, predict_region_embeddings,
)

MEAN, STD = 100.0, 50.0
TILES = sorted(glob.glob(os.path.join(RGB, "*.tif")))


def _opts(**kw):
    return InferenceOptions(**{"tile": 128, "overlap": 64, "num_workers": 0, "amp": "off", "batch_size": 4, **kw})


@pytest.fixture(scope="module")
def embedder():
    torch.manual_seed(0)
    return Embedder.from_encoder("dinov2_vits14_reg", pretrained=False, pixel_mean=[MEAN] * 3, pixel_std=[STD] * 3,
                                 embed_dim=32, depth=2, num_heads=2, patch_size=16, img_size=64,
                                 bands=("red", "green", "blue"))


def _scenes(tmp_path, n=2):
    lst = tmp_path / "scenes.txt"
    lst.write_text("\n".join(TILES[:n]) + "\n")
    return str(lst)


def _read(path):
    with rasterio.open(path) as src:
        return src.read(), src.profile, src.tags()


def _encode(embedder, image, layer=-1, pool=1):
    x = (torch.as_tensor(image, dtype=torch.float32)[None] - MEAN) / STD
    with torch.no_grad():
        f = embedder.encoder.forward_features(x, layers=[layer], norm=True)[0]
        if pool > 1:
            f = torch.nn.functional.avg_pool2d(f, pool)
    return f[0].numpy()


def test_cell_windows_write_every_cell_once():
    for rows, cols, tile, ov in ((14, 14, 8, 4), (7, 3, 4, 2), (5, 9, 8, 0), (13, 13, 4, 3)):
        count = np.zeros((rows, cols), int)
        for r0, c0, rl, rh, cl, ch in cell_windows(rows, cols, tile, ov):
            assert r0 <= rl < rh <= r0 + min(tile, rows) and c0 <= cl < ch <= c0 + min(tile, cols)
            count[rl:rh, cl:ch] += 1
        assert (count == 1).all()


def test_cog_is_on_the_patch_grid_in_the_scenes_crs(embedder, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    for pool in (1, 2):
        d = out / f"pool{pool}"
        d.mkdir()
        predict_region_embeddings(embedder, _scenes(tmp_path, 1), str(d), _opts(), EmbeddingOptions(pool=pool))
        sid = os.path.basename(TILES[0])[:-4]
        data, prof, tags = _read(str(d / f"{sid}.emb.tif"))
        with rasterio.open(TILES[0]) as src:
            crs, t, h, w = src.crs, src.transform, src.height, src.width
        cell = 16 * pool
        assert prof["crs"] == crs and prof["dtype"] == "float32" and data.shape == (32, h // cell, w // cell)
        assert tags["pool"] == str(pool) and tags["patch_size"] == "16"
        with rasterio.open(str(d / f"{sid}.emb.tif")) as emb:
            for i, j in ((0, 0), (3, 5), (h // cell - 1, w // cell - 1)):
                cell_bounds = rasterio.windows.bounds(rasterio.windows.Window(j, i, 1, 1), emb.transform)
                ground = rasterio.windows.bounds(rasterio.windows.Window(j * cell, i * cell, cell, cell), t)
                np.testing.assert_allclose(cell_bounds, ground, rtol=0, atol=1e-6)
        assert np.isfinite(data).all()


def test_window_by_window_cells_equal_the_encoder_on_their_window_and_one_window_the_whole_tile(embedder, tmp_path):
    """Each cell is the encoder's output for the window that owns it by centre crop (computed here
    from the raw tile); with one window (tile >= scene) every cell equals the whole-tile run."""
    sid = os.path.basename(TILES[0])[:-4]
    with rasterio.open(TILES[0]) as src:
        image = src.read().astype(np.float32)
    whole = _encode(embedder, image)
    one, many = tmp_path / "one", tmp_path / "many"
    one.mkdir(), many.mkdir()
    predict_region_embeddings(embedder, _scenes(tmp_path, 1), str(one), _opts(tile=224, overlap=0))
    got = _read(str(one / f"{sid}.emb.tif"))[0]
    np.testing.assert_allclose(got, whole, rtol=0, atol=1e-4)
    predict_region_embeddings(embedder, _scenes(tmp_path, 1), str(many), _opts(tile=128, overlap=64))
    got = _read(str(many / f"{sid}.emb.tif"))[0]
    expected = np.full_like(got, np.nan)
    # 14 cells a side, windows of 8 cells at starts 0, 4, 6: centre-crop boundaries at 6 and 9
    for r0, (rl, rh) in ((0, (0, 6)), (4, (6, 9)), (6, (9, 14))):
        for c0, (cl, ch) in ((0, (0, 6)), (4, (6, 9)), (6, (9, 14))):
            f = _encode(embedder, image[:, r0 * 16:(r0 + 8) * 16, c0 * 16:(c0 + 8) * 16])
            expected[:, rl:rh, cl:ch] = f[:, rl - r0:rh - r0, cl - c0:ch - c0]
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)
    # windows see less context than the whole tile: the cells differ from the whole-tile run
    assert np.abs(got - whole).max() > 1e-3


def test_pca_has_the_asked_dimensions_is_saved_and_reproducible(embedder, tmp_path):
    full, a, b, c = (tmp_path / n for n in ("full", "a", "b", "c"))
    for d in (full, a, b, c):
        d.mkdir()
    scenes = _scenes(tmp_path, 2)
    predict_region_embeddings(embedder, scenes, str(full), _opts())
    ra = predict_region_embeddings(embedder, scenes, str(a), _opts(), EmbeddingOptions(pca=5, pca_samples=150))
    predict_region_embeddings(embedder, scenes, str(b), _opts(), EmbeddingOptions(pca=5, pca_samples=150))
    pa, pb = PCA.load(str(a / "pca.npz")), PCA.load(str(b / "pca.npz"))
    assert pa.components.shape == (5, 32) and pa.samples == 150
    np.testing.assert_allclose(pa.components @ pa.components.T, np.eye(5), atol=1e-5)
    np.testing.assert_array_equal(pa.components, pb.components)
    for sid in ra["scenes"]:
        xa, xb = _read(str(a / f"{sid}.emb.tif"))[0], _read(str(b / f"{sid}.emb.tif"))[0]
        assert xa.shape == (5, 14, 14)
        np.testing.assert_array_equal(xa, xb)
        # the stored projection of the full embeddings is what was written
        x = _read(str(full / f"{sid}.emb.tif"))[0]
        proj = pa.transform(x.reshape(32, -1).T).T.reshape(5, 14, 14)
        np.testing.assert_allclose(xa, proj, rtol=0, atol=1e-4)
    # a PCA file given instead of a fit gives the same cells
    predict_region_embeddings(embedder, scenes, str(c), _opts(), EmbeddingOptions(pca_file=str(a / "pca.npz")))
    for sid in ra["scenes"]:
        np.testing.assert_array_equal(_read(str(c / f"{sid}.emb.tif"))[0], _read(str(a / f"{sid}.emb.tif"))[0])


def test_resume_skips_done_scenes_and_redoes_them_when_the_options_change(embedder, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    scenes = _scenes(tmp_path, 2)
    r1 = predict_region_embeddings(embedder, scenes, str(out), _opts(), EmbeddingOptions(pca=4))
    assert len(r1["done"]) == 2 and not r1["skipped"]
    r2 = predict_region_embeddings(embedder, scenes, str(out), _opts(), EmbeddingOptions(pca=4))
    assert r2["done"] == [] and sorted(r2["skipped"]) == sorted(r1["scenes"]) and r2["key"] == r1["key"]
    os.unlink(out / f"{r1['scenes'][1]}.emb.tif")  # a lost output: that scene only is redone
    r3 = predict_region_embeddings(embedder, scenes, str(out), _opts(), EmbeddingOptions(pca=4))
    assert r3["done"] == [r1["scenes"][1]]
    for changed in (EmbeddingOptions(pca=4, pool=2), EmbeddingOptions(pca=3), EmbeddingOptions(pca=4, layer=0),
                    EmbeddingOptions(pca=4, formats=("cog", "parquet"))):
        r = predict_region_embeddings(embedder, scenes, str(out), _opts(), changed)
        assert sorted(r["done"]) == sorted(r1["scenes"]), changed
    data = _read(str(out / f"{r1['scenes'][0]}.emb.tif"))[0]
    assert data.shape == (4, 14, 14)


def test_geoparquet_cells_carry_the_crs_polygons_and_the_cog_values(embedder, tmp_path):
    gpd = pytest.importorskip("geopandas")
    pytest.importorskip("pyarrow")
    out = tmp_path / "out"
    out.mkdir()
    r = predict_region_embeddings(embedder, _scenes(tmp_path, 2), str(out), _opts(),
                                  EmbeddingOptions(pool=2, formats=("cog", "parquet")))
    for sid, path in zip(r["scenes"], TILES[:2]):
        df = gpd.read_parquet(str(out / f"{sid}.emb.parquet"))
        with rasterio.open(path) as src:
            assert df.crs == src.crs
        data, prof, _ = _read(str(out / f"{sid}.emb.tif"))
        assert len(df) == 7 * 7 and list(df.columns[:3]) == ["scene", "row", "col"]
        for _, rec in df.iloc[[0, 10, 48]].iterrows():
            i, j = int(rec["row"]), int(rec["col"])
            want = rasterio.windows.bounds(rasterio.windows.Window(j, i, 1, 1), prof["transform"])
            np.testing.assert_allclose(rec.geometry.bounds, want, atol=1e-6)
            vals = np.array([rec[f"emb_{k:03d}"] for k in range(32)])
            np.testing.assert_allclose(vals, data[:, i, j], rtol=0, atol=1e-6)
    # float16 cells
    half = tmp_path / "half"
    half.mkdir()
    predict_region_embeddings(embedder, _scenes(tmp_path, 1), str(half), _opts(),
                              EmbeddingOptions(formats=("parquet",), dtype="float16"))
    df = gpd.read_parquet(str(half / f"{r['scenes'][0]}.emb.parquet"))
    assert df["emb_000"].dtype == np.float16 and len(df) == 14 * 14


def test_bad_embedding_requests_name_the_fix_and_write_nothing(embedder, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    scenes = _scenes(tmp_path, 1)
    with pytest.raises(EmbeddingError, match=r"embeddings layer: layer index 5 is out of range .* 2 blocks"):
        predict_region_embeddings(embedder, scenes, str(out), _opts(), EmbeddingOptions(layer=5))
    with pytest.raises(EmbeddingError, match=r"pool 3 does not divide the window's 8 x 8 patch grid"):
        predict_region_embeddings(embedder, scenes, str(out), _opts(), EmbeddingOptions(pool=3))
    with pytest.raises(EmbeddingError, match=r"overlap .* is not a whole number of cells of 64 px"):
        predict_region_embeddings(embedder, scenes, str(out), _opts(overlap=32), EmbeddingOptions(pool=4))
    with pytest.raises(EmbeddingError, match=r"--embeddings-pca 40 is more than the 32 dimensions"):
        predict_region_embeddings(embedder, scenes, str(out), _opts(), EmbeddingOptions(pca=40))
    with pytest.raises(EmbeddingError, match=r"Sequential holds no d2geo encoder"):
        predict_region_embeddings(torch.nn.Sequential(torch.nn.Linear(3, 3)), scenes, str(out), _opts())
    if tuple(int(v) for v in rasterio.__gdal_version__.split(".")[:2]) < (3, 11):
        with pytest.raises(EmbeddingError, match=r"float16 COG needs GDAL >= 3.11 .*--embeddings-format parquet"):
            EmbeddingOptions(dtype="float16")
    assert not glob.glob(str(out / "*.emb.*")) and not os.path.exists(out / "pca.npz")


def test_overlapping_scenes_write_each_ground_cell_once(embedder, tmp_path):
    """Two scenes cut from one real tile, overlapping by 96 px: every cell of the union is written
    by exactly one scene (its owner), and the two grids coincide on the ground."""
    from rasterio.windows import Window
    from rasterio.windows import transform as window_transform

    scenes = tmp_path / "scenes"
    scenes.mkdir()
    with rasterio.open(TILES[0]) as src:
        prof = src.profile
        parts = {"west": Window(0, 0, 160, 224), "east": Window(64, 0, 160, 224)}
        for name, win in parts.items():
            p = dict(prof, width=win.width, height=win.height, transform=window_transform(win, src.transform))
            with rasterio.open(str(scenes / f"{name}.tif"), "w", **p) as dst:
                dst.write(src.read(window=win))
    out = tmp_path / "out"
    out.mkdir()
    predict_region_embeddings(embedder, str(scenes), str(out), _opts(tile=96, overlap=32))
    union = np.zeros((14, 14), int)
    for name, off in (("west", 0), ("east", 4)):
        data, p, _ = _read(str(out / f"{name}.emb.tif"))
        assert data.shape == (32, 14, 10) and p["transform"].c == prof["transform"].c + off * 160
        written = np.isfinite(data).all(0)
        assert (np.isfinite(data).any(0) == written).all()  # a cell is written whole or not at all
        union[:, off:off + 10] += written
    assert (union == 1).all()
