"""Traced, exported and ONNX encoders and backbones work at input sizes other than the
size they were recorded at, and give the eager model's features there."""
import warnings

import pytest
import torch

from helpers import rel_err
from d2geo.encoders import build_encoder

pytest.importorskip("detectron2")
from d2geo.modeling import GeoBackbone  # noqa: E402

FAMILIES = {
    # name: (encoder builder, export-time input shape, other shapes to run at); the families' tiny
    # test variants at two blocks (export time grows with depth), plain DINOv2 without registers
    # and Prithvi v1 without time codes (not traceable, see below) deliberately otherwise
    "dinov2": (lambda: build_encoder("dinov2_vits14", embed_dim=48, depth=2, num_heads=3, img_size=98),
               (1, 3, 56, 70), [(1, 3, 112, 84), (1, 3, 98, 98)]),
    "dinov2_reg": (lambda: build_encoder("dinov2_test", depth=2, img_size=98),
                   (1, 3, 56, 70), [(1, 3, 112, 84), (1, 3, 98, 98)]),
    "dinov3": (lambda: build_encoder("dinov3_test", depth=2),
               (1, 3, 64, 96), [(1, 3, 128, 80)]),
    "prithvi": (lambda: build_encoder("prithvi_eo_v1_100", embed_dim=64, depth=2, num_heads=2, num_frames=2),
                (1, 6, 2, 64, 96), [(1, 6, 2, 128, 80), (1, 6, 2, 224, 224)]),
    # two heads, not clay_test's four: Clay's ONNX export is the slowest here
    "clay": (lambda: build_encoder("clay_test", depth=2, num_heads=2,
                                   sensor="sentinel-2-l2a", bands=["red", "green", "blue"], gsd=10.0),
             (1, 3, 32, 48), [(1, 3, 64, 40)]),
    "ssl4eo": (lambda: build_encoder("ssl4eo_test", depth=2),
               (1, 13, 64, 96), [(1, 13, 128, 80)]),
    "copernicusfm": (lambda: build_encoder("copernicusfm_test", depth=2,
                                           bands=("B04", "B03", "B02")),
                     (1, 3, 64, 96), [(1, 3, 64, 64), (1, 3, 128, 80)]),
    # DOFA: off the native 14 x 14 grid at export, then non-square and the native 224 px
    "dofa": (lambda: build_encoder("dofa_test", depth=2, img_size=224, bands=["B04", "B03", "B02"],
                                   sensor="sentinel-2-l2a"),
             (1, 3, 64, 96), [(1, 3, 128, 80), (1, 3, 224, 224), (1, 3, 48, 160)]),
    # the position table is interpolated in the recorded model, not cached per size; 224 px is
    # the table's own grid
    "terramind": (lambda: build_encoder("terramind_test", depth=2,
                                        bands=["S2L2A:B04", "S2L2A:B03", "S2L2A:B02", "S1RTC:VV", "S1RTC:VH"]),
                  (1, 5, 64, 96), [(1, 5, 128, 80), (1, 5, 224, 224)]),
    # channel ids of optical and SAR bands are constants of the recorded model; 70 px is the table's grid
    "panopticon": (lambda: build_encoder("panopticon_test", depth=2, img_size=70,
                                         bands=["B04", "B03", "B02", "VV"]),
                   (1, 4, 56, 84), [(1, 4, 98, 42), (1, 4, 70, 70)]),
    # the ALiBi bias is computed from the traced grid, not cached per size
    "croma_joint": (lambda: build_encoder("croma_test", depth=2, modality="joint"),
                    (1, 14, 40, 64), [(1, 14, 72, 32)]),
    # the 2-D position encoding follows the traced grid; the month is the built-in default_month
    "galileo": (lambda: build_encoder("galileo_nano", embed_dim=16, depth=2, num_heads=4, num_frames=2,
                                      default_month=3),
                (1, 12, 2, 32, 48), [(1, 12, 2, 64, 40), (1, 12, 2, 96, 96)]),
}
#: hierarchical Swin (stage maps at strides 4..32): recorded at 64 x 96 (the last stage 2 x 3
#: tokens, one window), run where stages have several windows, padded windows, non-square;
#: not satlas_test: two blocks in the third stage, so that its shifted windows are exported too
SATLAS = (lambda: build_encoder("satlas_swinb_sentinel2_si_ms", embed_dim=16, depths=(1, 1, 2, 1),
                                num_heads=(2, 2, 4, 4)),
          (1, 9, 64, 96), [(1, 9, 128, 320), (1, 9, 256, 256), (1, 9, 96, 64), (1, 9, 320, 192)])


def _family(name):
    torch.manual_seed(0)
    make, shape, others = SATLAS if name == "satlas" else FAMILIES[name]
    enc = make().eval()
    with torch.no_grad():  # non-trivial tokens and layer scales, as in trained weights
        for n, p in enc.named_parameters():
            if "token" in n or "gamma" in n:
                p.normal_(0, 0.5)
            elif "logit_scale" in n or "cpb_mlp" in n:  # Swin-V2 temperatures, position-bias MLP
                p.add_(0.3 * torch.randn_like(p))
    return enc, torch.randn(shape), [torch.randn(s) for s in others]


def _dynamic_hw(x):
    return ({x.ndim - 2: torch.export.Dim.AUTO, x.ndim - 1: torch.export.Dim.AUTO},)


#: families whose export takes long on a CPU (CROMA's joint model: three encoders, ~14 s)
SLOW_EXPORT = {"croma_joint"}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_EXPORT else n
                                  for n in sorted(FAMILIES)])
def test_torch_export_with_dynamic_hw_matches_eager(name):
    enc, x, others = _family(name)
    ep = torch.export.export(enc, (x,), dynamic_shapes=_dynamic_hw(x))
    exported = ep.module()
    for y in [x, *others]:
        with torch.no_grad():
            assert rel_err(exported(y), enc(y)) <= 1e-5, (name, tuple(y.shape))


@pytest.mark.slow  # another export (~4 s); the default pass exports DOFA with its default bands above
def test_dofa_exported_with_wavelengths_as_an_input_serves_another_sensor():
    """The wavelengths as a tensor input of the exported DOFA: one program, other bands'
    kernels (same band count), other sizes."""
    torch.manual_seed(0)
    enc = build_encoder("dofa_test", depth=2, img_size=224).eval()

    class WithWavelengths(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, image, wavelengths):
            return self.net(image, metadata={"wavelengths": wavelengths})

    model = WithWavelengths(enc)
    x, rgb = torch.randn(1, 3, 64, 96), torch.tensor([0.665, 0.56, 0.49])
    ep = torch.export.export(model, (x, rgb), dynamic_shapes=(_dynamic_hw(x)[0], None))
    swir = torch.tensor([0.865, 1.61, 2.19])
    with torch.no_grad():
        for y, waves in [(torch.randn(1, 3, 128, 80), swir), (x, rgb)]:
            assert rel_err(ep.module()(y, waves), model(y, waves)) <= 1e-5
        assert rel_err(model(x, swir), model(x, rgb)) > 1e-3  # the wavelengths matter


def test_scale_mae_exported_with_gsd_as_an_input_follows_size_and_gsd():
    """Scale-MAE needs the GSD in every pass: exported with it as a tensor input, one program
    serves other sizes and other GSDs."""
    torch.manual_seed(0)
    enc = build_encoder("scale_mae_test", depth=2).eval()

    class WithGSD(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, image, gsd):
            return self.net(image, metadata={"gsd": gsd})

    model = WithGSD(enc)
    x, gsd = torch.randn(1, 3, 64, 96), torch.tensor([0.3])
    ep = torch.export.export(model, (x, gsd), dynamic_shapes=(_dynamic_hw(x)[0], None))
    with torch.no_grad():
        for y, g in [(x, gsd), (torch.randn(1, 3, 128, 80), torch.tensor([1.2])), (x, torch.tensor([10.0]))]:
            assert rel_err(ep.module()(y, g), model(y, g)) <= 1e-5
        assert rel_err(model(x, torch.tensor([10.0])), model(x, gsd)) > 1e-3  # the GSD matters


@pytest.mark.slow  # the tiny Swin's export takes ~20 s of CPU (symbolic shapes of the windows)
def test_satlas_swin_exports_with_dynamic_hw_and_matches_eager():
    """torchvision's window attention branches on the map size; the recorded encoder runs the
    tensor-only equivalent, so one export serves sizes with one or many windows per stage."""
    enc, x, others = _family("satlas")
    ep = torch.export.export(enc, (x,), dynamic_shapes=_dynamic_hw(x))
    exported = ep.module()
    for y in [x, *others]:
        with torch.no_grad():
            ref = enc.forward_features(y, layers=[0, 1, 2, 3], norm=True)
            got = exported(y)
        assert got.shape == ref[-1].shape and rel_err(got, ref[-1]) <= 1e-5, tuple(y.shape)


@pytest.mark.parametrize("name", ["dinov2", "clay", pytest.param("dofa", marks=pytest.mark.slow),
                                  pytest.param("satlas", marks=pytest.mark.slow)])
def test_onnx_with_dynamic_hw_matches_eager_at_other_sizes(name, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    enc, x, others = _family(name)
    path = str(tmp_path / f"{name}.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(enc, (x,), path, dynamic_shapes=_dynamic_hw(x), dynamo=True)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    feed = sess.get_inputs()[0].name
    for y in others:
        with torch.no_grad():
            ref = enc(y)
        out = torch.from_numpy(sess.run(None, {feed: y.numpy()})[0])
        assert out.shape == ref.shape
        assert rel_err(out, ref) <= 1e-5, (name, tuple(y.shape))


@pytest.mark.parametrize("name", ["dinov2", "dinov2_reg", "prithvi", "copernicusfm", "dofa", "satlas",
                                  "terramind", "panopticon"])
def test_traced_backbone_matches_eager_at_other_sizes(name):
    enc, x, others = _family(name)
    backbone = GeoBackbone(enc, layers=(0, 1)).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(backbone, (x,), strict=False, check_trace=False)
    for y in others:
        with torch.no_grad():
            ref, out = backbone(y), traced(y)
        assert set(out) == set(ref)
        for k in ref:
            assert out[k].shape == ref[k].shape and rel_err(out[k], ref[k]) <= 1e-5, (name, k, tuple(y.shape))


def test_traced_backbone_takes_gsd_as_a_tensor():
    """The mapper's 0-d tensor gsd, batched, goes through a traced Clay backbone: another
    gsd and another size give the eager features (a float would be frozen into the trace)."""
    enc, x, others = _family("clay")
    backbone = GeoBackbone(enc).eval()

    class WithGsd(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, image, gsd):
            with self.net.use_metadata({"gsd": gsd}):
                return self.net(image)["layer1"]

    model = WithGsd(backbone)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, (x, torch.tensor([10.0])), check_trace=False)
    y = others[0].expand(2, -1, -1, -1).clone()
    gsd = torch.stack([torch.tensor(0.6), torch.tensor(30.0)])  # what collate_metadata makes of the mapper's
    with torch.no_grad():
        ref = model(y, gsd)
        assert rel_err(traced(y, gsd), ref) <= 1e-5
        assert rel_err(ref[0], ref[1]) > 1e-3  # the gsd matters


@pytest.mark.filterwarnings('ignore::torch.jit.TracerWarning')
def test_tracing_with_timestamps_is_refused_not_frozen():
    """Calendar codes of the acquisition time (Clay, Prithvi-TL) cannot follow a traced input:
    tracing them would freeze this batch's dates into the model, so it is refused."""
    from d2geo.encoders import EncoderInputError

    clay, x, _ = _family("clay")
    prithvi = build_encoder("prithvi_test", depth=1, num_frames=1).eval()
    cases = [(clay, x, "Clay's time code"), (prithvi, torch.randn(1, 6, 32, 32), "Prithvi's .year, day of year.")]
    for enc, image, match in cases:
        with pytest.raises(EncoderInputError, match=match):
            torch.jit.trace(_WithTime(enc), (image, torch.tensor([[1.6e9]], dtype=torch.float64)),
                            check_trace=False)


class _WithTime(torch.nn.Module):
    def __init__(self, enc):
        super().__init__()
        self.enc = enc

    def forward(self, image, timestamps):
        return self.enc(image, metadata={"timestamps": timestamps})


@pytest.mark.parametrize("name, kw", [
    ("copernicusfm_vitb16", dict(bands=("B04", "B03", "B02"))),
    ("copernicusfm_vitb16", dict(bands=("B04", "B03", "B02"), patch_size=8)),
    ("ssl4eo_s12_vits16_moco", dict(bands=("B04", "B03", "B02"))),
])
def test_antialiased_resizes_onnx_with_default_tracing_match_eager(name, kw, tmp_path):
    """The TorchScript ONNX exporter (export_model.py's default ``--export-method tracing``)
    has no ``_upsample_bicubic2d_aa``: recorded Copernicus-FM and SSL4EO models resize the
    position table (and make another patch size's kernel-resize matrix) without it, equal to
    eager at other sizes."""
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    enc = build_encoder(name, embed_dim=64, depth=2, num_heads=2, img_size=64, **kw).eval()
    with torch.no_grad():
        if getattr(enc, "vit", None) is not None:
            enc.vit.pos_embed.normal_(0, 0.5)  # a table whose resize shows
    x = torch.randn(1, 3, 64, 96)
    path = str(tmp_path / "cfm.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(enc, (x,), path, input_names=["image"], dynamic_axes={"image": {2: "h", 3: "w"}},
                          opset_version=17, dynamo=False)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    for y in (x, torch.randn(1, 3, 64, 64), torch.randn(1, 3, 128, 80)):
        with torch.no_grad():
            ref = enc(y)
        out = torch.from_numpy(sess.run(None, {"image": y.numpy()})[0])
        assert out.shape == ref.shape and rel_err(out, ref) <= 1e-5, tuple(y.shape)


def test_resize_matrices_equal_torch_bicubic():
    """The interpolation matrices recorded models use (resize.py) against F.interpolate."""
    import torch.nn.functional as F

    from d2geo.encoders.resize import bicubic_matrix, resize_table

    table = torch.randn(1, 14 * 14, 8)
    grid = table.reshape(14, 14, 8).permute(2, 0, 1)[None]
    for h, w in ((14, 14), (4, 6), (37, 9), (20, 31)):
        for aa in (True, False):
            want = F.interpolate(grid, size=(h, w), mode="bicubic", align_corners=False, antialias=aa)
            got = resize_table(table, bicubic_matrix(h, 14, antialias=aa), bicubic_matrix(w, 14, antialias=aa))
            assert rel_err(got, want[0].permute(1, 2, 0).reshape(1, h * w, 8)) <= 1e-5, (h, w, aa)
