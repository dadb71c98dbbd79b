"""Detection: the cube, its boxes and masks share one geometry; the R-CNN models see pixels.

Guards: boxes/masks drifting from the cube under resize and flip (source and rgb paths), the
compressed and spatial paths disagreeing on a detection geometry, statistics of another
geometry being accepted, anchors / RoI pooling using cube cells instead of pixels, the models
not training (non-finite losses, no gradient at the first convolution), and predictions not
mapping back to the original image (a perfect prediction must score AP 1).
"""

import json
import os
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from jpeg_factory import photo  # noqa: E402
from jpegfreq import ChannelSet  # noqa: E402
from jpegfreq.checkpoint import load_checkpoint  # noqa: E402
from jpegfreq.coco import evaluate_coco  # noqa: E402
from jpegfreq.detection import CocoJpeg, DetectionGeometry, collate, resized_size  # noqa: E402
from jpegfreq.stats import Stats, compute_detection_stats  # noqa: E402
from jpegfreq.synthetic import make_shapes_dataset  # noqa: E402
from jpegfreq.models.detection import (  # noqa: E402
    CubeAnchorGenerator,
    CubeTransform,
    FixedScaleRoIAlign,
    ResNetDCTFPN,
    build_detector,
    fasterrcnn_resnet50_dct_fpn,
    maskrcnn_resnet50_dct_fpn,
    maskrcnn_resnet50_fpn_rgb,
)

BRIGHT, DARK = 230, 25
# light heads: the tests check wiring, not accuracy
LIGHT = dict(box_batch_size_per_image=32, rpn_pre_nms_top_n_train=200, rpn_post_nms_top_n_train=100,
             rpn_pre_nms_top_n_test=100, rpn_post_nms_top_n_test=50, box_detections_per_img=20)


# pycocotools' Cython mask decoder trips numpy 2's __array__ copy deprecation (not ours)
pytestmark = [pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning"),
              pytest.mark.usefixtures("torch_one_thread")]


# ---------------------------------------------------------------------------
# Helpers: one bright rectangle (or a photo) per JPEG, COCO json around it
# ---------------------------------------------------------------------------

def _write_set(folder, images):
    """images: list of (pixels uint8 (h, w, 3), [(category_id, mask (h, w) bool), ...])."""
    os.makedirs(folder, exist_ok=True)
    imgs, anns = [], []
    for n, (pixels, objs) in enumerate(images, start=1):
        name = f"{n:03d}.jpg"
        Image.fromarray(pixels).save(os.path.join(folder, name), quality=95, subsampling="4:4:4")
        h, w = pixels.shape[:2]
        imgs.append({"id": n, "file_name": name, "width": w, "height": h})
        for cat, mask in objs:
            ys, xs = np.nonzero(mask)
            rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
            rle["counts"] = rle["counts"].decode("ascii")
            anns.append({"id": len(anns) + 1, "image_id": n, "category_id": cat,
                         "segmentation": rle, "area": float(mask.sum()), "iscrowd": 0,
                         "bbox": [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1),
                                  int(ys.max() - ys.min() + 1)]})
    ann = os.path.join(folder, "ann.json")
    with open(ann, "w") as f:
        json.dump({"images": imgs, "annotations": anns,
                   "categories": [{"id": 3, "name": "thing"}, {"id": 7, "name": "other"}]}, f)
    return ann


def _bright_rect(rng):
    w, h = int(rng.integers(90, 200)), int(rng.integers(90, 200))
    bw, bh = int(rng.integers(28, w // 2)), int(rng.integers(28, h // 2))
    x0, y0 = int(rng.integers(4, w - bw - 4)), int(rng.integers(4, h - bh - 4))
    pixels = np.full((h, w, 3), DARK, np.uint8)
    pixels[y0:y0 + bh, x0:x0 + bw] = BRIGHT
    mask = np.zeros((h, w), bool)
    mask[y0:y0 + bh, x0:x0 + bw] = True
    return pixels, mask


@pytest.fixture(scope="module")
def rect_set(tmp_path_factory):
    rng = np.random.default_rng(7)
    folder = str(tmp_path_factory.mktemp("rects"))
    images = []
    for _ in range(6):
        pixels, mask = _bright_rect(rng)
        images.append((pixels, [(7, mask)]))
    return folder, _write_set(folder, images)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("shapes"))
    ann = make_shapes_dataset(root, 4, "val", seed=3, size=(128, 96), objects=(1, 2),
                              object_size=(28, 56), category_ids=[2, 5, 9])
    return os.path.join(root, "val"), ann


# ---------------------------------------------------------------------------
# Geometry
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("w, h, lo, hi, want", [
    (640, 480, 800, 1333, (1068, 800)),     # short side 800
    (2000, 500, 800, 1333, (1332, 332)),    # long side capped at 1333 (rounded down to /4)
    (500, 500, 800, 1333, (800, 800)),
    (128, 96, 96, 128, (128, 96)),          # identity
    (101, 37, 64, 400, (176, 64)),
])
def test_resized_size(w, h, lo, hi, want):
    got = resized_size(w, h, lo, hi)
    assert got == want
    assert all(v % 4 == 0 and 4 <= v <= hi for v in got)


def test_geometry_round_trip_and_cube_geometry():
    g = DetectionGeometry(width=333, height=250, out_w=400, out_h=300, flip=True)
    boxes = np.array([[10.5, 20, 100, 200], [0, 0, 333, 250]])
    back = g.boxes_to_source(g.boxes_to_resized(boxes))
    np.testing.assert_allclose(back, boxes, atol=1e-3)
    r = g.boxes_to_resized(boxes)
    np.testing.assert_allclose(r[0], [400 - 100 * 400 / 333, 20 * 1.2, 400 - 10.5 * 400 / 333, 240],
                               rtol=1e-6)
    cg = g.cube_geometry()
    assert (cg.out_h, cg.out_w, cg.box, cg.flip) == (600, 800, (0.0, 0.0, 333.0, 250.0), True)
    assert g.cube_shape == (75, 100)
    with pytest.raises(ValueError, match="multiples of 4"):
        DetectionGeometry(10, 10, 30, 32)


# ---------------------------------------------------------------------------
# Boxes and masks line up with the cube
# ---------------------------------------------------------------------------

def _cells_agree(bright_cells, box_cells, margin=1):
    """Cells at least `margin` inside the box are bright, cells `margin` outside are dark."""
    hh, ww = bright_cells.shape
    y, x = np.mgrid[0:hh, 0:ww] + 0.5            # cell centres in cell units
    x0, y0, x1, y1 = box_cells
    inside = (x > x0 + margin) & (x < x1 - margin) & (y > y0 + margin) & (y < y1 - margin)
    outside = (x < x0 - margin) | (x > x1 + margin) | (y < y0 - margin) | (y > y1 + margin)
    assert inside.any() and outside.any()
    return bright_cells[inside].all() and not bright_cells[outside].any()


@pytest.mark.parametrize("seed", range(6))
def test_box_and_mask_line_up_with_cube(rect_set, seed):
    folder, ann = rect_set
    rng = np.random.default_rng(100 + seed)
    lo = int(rng.integers(48, 240))
    hi = int(lo * rng.uniform(1.0, 2.0))
    flip = bool(seed % 2)
    ds = CocoJpeg(folder, ann, channels="24S", train=True, flip_p=1.0 if flip else 0.0,
                  min_size=lo, max_size=hi)
    i = seed % len(ds)
    x, t = ds[i]
    g = t["geometry"]
    assert g.flip == flip and (g.out_w, g.out_h) == resized_size(g.width, g.height, lo, hi)
    assert tuple(x.shape) == (24, g.out_h // 4, g.out_w // 4)
    assert tuple(t["masks"].shape) == (1, g.out_h, g.out_w) and t["masks"].dtype == torch.uint8
    assert t["labels"].tolist() == [2]        # category 7 is the second: label 2

    # the box, computed independently from the json
    bx, by, bw, bh = ds.coco.imgToAnns[ds.ids[i]][0]["bbox"]
    sx, sy = g.out_w / g.width, g.out_h / g.height
    x0, x1 = bx * sx, (bx + bw) * sx
    if flip:
        x0, x1 = g.out_w - x1, g.out_w - x0
    np.testing.assert_allclose(t["boxes"][0].numpy(), [x0, by * sy, x1, (by + bh) * sy], rtol=1e-5)

    # Y0 (DC) of the cube: 8 * mean - 1024 per block, bright > 0 > dark
    bright = x[0].numpy() > 0
    assert _cells_agree(bright, t["boxes"][0].numpy() / 4)
    # the mask pooled to cube cells is the cube's bright area (boundary cells aside)
    m = t["masks"][0].float().reshape(g.out_h // 4, 4, g.out_w // 4, 4).mean((1, 3)).numpy()
    settled = (m == 0) | (m == 1)
    assert settled.mean() > 0.8
    assert ((m[settled] == 1) == bright[settled]).all()


def test_rgb_source_lines_up(rect_set):
    folder, ann = rect_set
    ds = CocoJpeg(folder, ann, source="rgb", train=True, flip_p=1.0, min_size=120, max_size=200)
    x, t = ds[2]
    g = t["geometry"]
    assert tuple(x.shape) == (3, g.out_h, g.out_w) and 0 <= x.min() and x.max() <= 1
    bright = x.mean(0).numpy() > 0.5
    m = t["masks"][0].numpy().astype(bool)
    assert (bright == m).mean() > 0.98
    assert _cells_agree(bright, t["boxes"][0].numpy(), margin=2)


def test_jpeg_coeffs_matches_spatial(tmp_path):
    images = []
    for seed in range(3):
        pixels = np.asarray(photo(160 + 16 * seed, 120, seed=seed))
        mask = np.zeros(pixels.shape[:2], bool)
        mask[20:70, 30:90] = True
        images.append((pixels, [(3, mask)]))
    ann = _write_set(str(tmp_path), images)
    num = {"Y": 0.0, "C": 0.0}
    den = {"Y": 0.0, "C": 0.0}
    for i in range(3):
        cubes = []
        for source in ("jpeg-coeffs", "spatial"):
            ds = CocoJpeg(str(tmp_path), ann, source=source, train=True, flip_p=1.0,
                          min_size=96 + 40 * i, max_size=400, masks=False, seed=i)
            x, t = ds[i]
            cubes.append(x.numpy().astype(np.float64))
        assert cubes[0].shape == cubes[1].shape
        comp = ds.channels.component_of
        for key, sel in (("Y", comp == 0), ("C", comp > 0)):
            num[key] += ((cubes[0][sel] - cubes[1][sel]) ** 2).sum()
            den[key] += (cubes[1][sel] ** 2).sum()
    # pooled relative RMS (docs/design.md: the spatial reference's 8-bit rounding is the residue)
    assert np.sqrt(num["Y"] / den["Y"]) < 0.01
    assert np.sqrt(num["C"] / den["C"]) < 0.05


def test_stats_are_checked_and_normalise(rect_set):
    folder, ann = rect_set
    ds = CocoJpeg(folder, ann, min_size=64, max_size=96, masks=False)
    st = compute_detection_stats(ds, progress=False)
    assert st.geometry["kind"] == "detection" and len(st.mean) == 24
    normed = CocoJpeg(folder, ann, min_size=64, max_size=96, stats=st, masks=False)
    xs = np.concatenate([normed[i][0].numpy().reshape(24, -1) for i in range(len(normed))], 1)
    np.testing.assert_allclose(xs.mean(1), 0, atol=1e-3)
    np.testing.assert_allclose(xs.std(1)[st.std > 1e-3], 1, atol=1e-2)
    with pytest.raises(ValueError, match="min_size=800"):
        CocoJpeg(folder, ann, stats=st)              # other sizes
    classification = Stats(st.channels, st.mean, st.std, "jpeg-coeffs", (448, 448), 1, None)
    with pytest.raises(ValueError, match="detection"):
        CocoJpeg(folder, ann, min_size=64, max_size=96, stats=classification)
    with pytest.raises(ValueError, match="rgb"):
        CocoJpeg(folder, ann, source="rgb", stats=st)


def test_annotation_size_mismatch_is_an_error(tmp_path, rect_set):
    folder, ann = rect_set
    with open(ann) as f:
        data = json.load(f)
    data["images"][0]["width"] += 8
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    ds = CocoJpeg(folder, str(bad), min_size=64, max_size=96)
    with pytest.raises(ValueError, match="annotation says"):
        ds[0]


def test_inputs_come_from_the_pipeline_and_errors_name_the_file(tmp_path, rect_set):
    """The cube is jpegfreq.cube with the detection Geometry (normalised there), the RGB input
    pipeline.rgb_image with the DetectionGeometry; a broken file's error names its path."""
    import jpegfreq
    from jpegfreq import JpegError
    from jpegfreq.pipeline import rgb_image
    folder, ann = rect_set
    st = compute_detection_stats(CocoJpeg(folder, ann, min_size=64, max_size=96, masks=False),
                                 progress=False)
    ds = CocoJpeg(folder, ann, train=True, flip_p=1.0, min_size=64, max_size=96, stats=st,
                  masks=False, dtype="float16")
    g = ds.geometry(1)
    want = jpegfreq.cube(ds.path(1), "24S", geometry=g.cube_geometry(), stats=st,
                         dtype="float16")
    assert np.array_equal(ds.load(1, g), want)
    raw = ds.load(1, g, normalise=False)
    assert np.array_equal(raw, jpegfreq.cube(ds.path(1), "24S", geometry=g.cube_geometry(),
                                             dtype="float16"))
    rgb = CocoJpeg(folder, ann, source="rgb", min_size=64, max_size=96, masks=False)
    g = rgb.geometry(2, flip=True)
    x = rgb.load(2, g)
    assert x.shape == (3, g.out_h, g.out_w)
    assert np.array_equal(x, rgb_image(rgb.path(2), g))
    # the same numbers as the cube's resize filter, applied to the decoded pixels
    pixels = np.asarray(Image.open(rgb.path(2)).convert("RGB"), np.float32)
    ref = np.stack([g.resample(pixels[..., i]) for i in range(3)]) / 255.0
    np.testing.assert_allclose(x, ref, atol=2 / 255)

    with open(ann) as f:
        data = json.load(f)
    broken = tmp_path / "broken"
    broken.mkdir()
    for im in data["images"]:
        src = open(os.path.join(folder, im["file_name"]), "rb").read()
        (broken / im["file_name"]).write_bytes(src[:60])          # ends inside the header
    bad = CocoJpeg(str(broken), ann, min_size=64, max_size=96, masks=False)
    with pytest.raises(JpegError) as e:
        bad[0]
    assert e.value.source == bad.path(0)


# ---------------------------------------------------------------------------
# The models work in pixels of the resized image
# ---------------------------------------------------------------------------

def test_transform_anchors_and_pooler_use_pixel_strides():
    cubes = [torch.randn(24, 24, 32), torch.randn(24, 17, 9)]
    images, _ = CubeTransform()(cubes)
    assert tuple(images.tensors.shape) == (2, 24, 24, 32)     # padded to 8 cells
    assert images.image_sizes == [(96, 128), (68, 36)]       # 4 px per cell, unpadded
    backbone = ResNetDCTFPN("24S").eval()
    with torch.no_grad():
        feats = backbone(images.tensors)
    assert [tuple(f.shape[-2:]) for f in feats.values()] == [(24, 32), (12, 16), (6, 8), (3, 4),
                                                            (2, 2)]
    gen = CubeAnchorGenerator()
    anchors = gen(images, list(feats.values()))[0]
    counts = [f.shape[-2] * f.shape[-1] * 3 for f in feats.values()]
    assert anchors.shape == (sum(counts), 4)
    level0 = anchors[: counts[0]]
    centres = (level0[:, :2] + level0[:, 2:]) / 2
    xs, ys = torch.unique(centres[:, 0]), torch.unique(centres[:, 1])
    # one anchor centre per cell, every 4 px, over the whole 128 x 96 px image
    assert torch.equal(xs, torch.arange(32) * 4.0) and torch.equal(ys, torch.arange(24) * 4.0)
    pool = anchors[sum(counts[:4]):]
    assert torch.unique((pool[:, 0] + pool[:, 2]) / 2).tolist() == [0.0, 64.0]   # stride 64
    pooler = FixedScaleRoIAlign()
    assert pooler.scales == [1 / 4, 1 / 8, 1 / 16, 1 / 32]


def test_roi_pooling_on_the_object_sees_it(rect_set):
    """The box of the object, pooled from the DC map through the model's own pooler, is bright;
    the same box moved off the object is dark: boxes and feature maps share one frame."""
    folder, ann = rect_set
    ds = CocoJpeg(folder, ann, train=True, flip_p=1.0, min_size=96, max_size=160)
    model = fasterrcnn_resnet50_dct_fpn("24S", num_classes=3, **LIGHT)
    pooler = model.roi_heads.box_roi_pool
    checked = 0
    for i in range(len(ds)):
        x, t = ds[i]
        dc = x[:1][None]                                        # (1, 1, h, w) cells
        feats = {"0": dc}
        for k in range(1, 4):
            feats[str(k)] = torch.nn.functional.avg_pool2d(dc, 2 ** k, ceil_mode=True)
        images, _ = model.transform([x])
        g = t["geometry"]
        x0, y0, x1, y1 = t["boxes"][0].tolist()
        inner = torch.tensor([[x0 + 6, y0 + 6, x1 - 6, y1 - 6]])   # clear of the blurred edge
        width = x1 - x0
        if x0 > width + 12:                                     # the same box, left of it
            off = torch.tensor([[2.0, y0 + 6, width - 10, y1 - 6]])
        elif g.out_w - x1 > width + 12:                         # or right of it
            off = torch.tensor([[g.out_w - width + 10, y0 + 6, g.out_w - 2.0, y1 - 6]])
        else:
            continue
        on = pooler(feats, [inner], images.image_sizes)
        dark = pooler(feats, [off], images.image_sizes)
        assert on.min() > 0.5 * (8 * (BRIGHT - 128)), i
        assert dark.max() < 0.5 * (8 * (DARK - 128)), i
        checked += 1
    assert checked >= 2


@pytest.mark.parametrize("builder", [fasterrcnn_resnet50_dct_fpn, maskrcnn_resnet50_dct_fpn],
                         ids=["faster", "mask"])
def test_forward_backward(shapes, builder):
    folder, ann = shapes
    ds = CocoJpeg(folder, ann, train=True, min_size=96, max_size=128,
                  masks=builder is maskrcnn_resnet50_dct_fpn)
    st = compute_detection_stats(ds, progress=False)
    ds = CocoJpeg(folder, ann, train=True, min_size=96, max_size=128, stats=st,
                  masks=builder is maskrcnn_resnet50_dct_fpn)
    images, targets = collate([ds[0], ds[1]])
    assert [tuple(im.shape) for im in images] == [(24, 24, 32)] * 2      # 128 x 96 px
    torch.manual_seed(0)
    model = builder("24S", num_classes=ds.num_classes, **LIGHT).train()
    losses = model(list(images), list(targets))
    want = {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    if builder is maskrcnn_resnet50_dct_fpn:
        want.add("loss_mask")
    assert set(losses) == want
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    grad = model.backbone.body["layer1"][0].conv1.weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        out = model(list(images))
    assert len(out) == 2 and out[0]["boxes"].shape[1] == 4
    if builder is maskrcnn_resnet50_dct_fpn:
        assert out[0]["masks"].shape[1:] == (1, 96, 128)


def test_classification_weights_load_into_the_backbone(tmp_path):
    from jpegfreq.models import resnet50_dct
    torch.manual_seed(1)
    net = resnet50_dct(ChannelSet.parse("24S"), num_classes=5)
    path = str(tmp_path / "cls.pth")
    torch.save({"model": {f"module.{k}": v for k, v in net.state_dict().items()},
                "channels": ChannelSet.parse("24S").spec, "gate": False}, path)
    model = maskrcnn_resnet50_dct_fpn("24S", num_classes=3, backbone_weights=path)
    body = model.backbone.body
    assert torch.equal(body["layer1"][0].conv1.weight, net.layer1[0].conv1.weight)
    assert torch.equal(body["layer4"][2].bn3.running_var, net.layer4[2].bn3.running_var)
    assert not body["layer1"][0].conv1.weight.requires_grad       # layer1 frozen by default
    assert body["layer2"][0].conv1.weight.requires_grad
    assert type(body["layer2"][0].bn1).__name__ == "FrozenBatchNorm2d"
    with pytest.raises(ValueError, match="trained on channels"):
        fasterrcnn_resnet50_dct_fpn("64S", num_classes=3, backbone_weights=path)


def test_builders_refuse_resize_settings_and_rgb_baseline_does_not_resize():
    with pytest.raises(ValueError, match="min_size"):
        fasterrcnn_resnet50_dct_fpn("24S", num_classes=3, min_size=600)
    rgb = maskrcnn_resnet50_fpn_rgb(num_classes=3)
    images, _ = rgb.transform([torch.rand(3, 96, 128), torch.rand(3, 68, 36)])
    assert images.image_sizes == [(96, 128), (68, 36)]
    with pytest.raises(ValueError, match="task"):
        build_detector("keypoints", "jpeg-coeffs")


# ---------------------------------------------------------------------------
# Evaluation: back to original coordinates, through pycocotools
# ---------------------------------------------------------------------------

def _perfect(t):
    n = len(t["boxes"])
    return {"boxes": t["boxes"], "labels": t["labels"], "scores": torch.ones(n),
            "masks": t["masks"][:, None].float()}


@pytest.mark.parametrize("flip", [False, True])
def test_perfect_predictions_score_ap_one(shapes, flip):
    folder, ann = shapes
    # upscaled 1.5x: masks survive the round trip through the resized frame
    ds = CocoJpeg(folder, ann, train=True, flip_p=1.0 if flip else 0.0, min_size=144,
                  max_size=192)
    results = []
    for i in range(len(ds)):
        _, t = ds[i]
        assert t["geometry"].flip == flip
        results.extend(ds.to_coco(t, _perfect(t)))
    assert {r["category_id"] for r in results} <= {2, 5, 9}
    bbox = evaluate_coco(ds.coco, results, "bbox")
    segm = evaluate_coco(ds.coco, results, "segm")
    assert bbox["AP"] > 0.99
    assert segm["AP50"] > 0.99 and segm["AP"] > 0.9


def test_model_evaluation_returns_ap(shapes):
    folder, ann = shapes
    ds = CocoJpeg(folder, ann, min_size=96, max_size=128)
    ds = CocoJpeg(folder, ann, min_size=96, max_size=128,
                  stats=compute_detection_stats(ds, progress=False))
    torch.manual_seed(0)
    # untrained: keep every detection, however unsure, so that there is something to score
    model = maskrcnn_resnet50_dct_fpn("24S", num_classes=ds.num_classes, box_score_thresh=0.0,
                                      **LIGHT).eval()
    results = []
    with torch.no_grad():
        for batch in [[ds[0], ds[1]], [ds[2], ds[3]]]:
            images, targets = collate(batch)
            for t, o in zip(targets, model(list(images))):
                results.extend(ds.to_coco(t, o))
    assert results and all(len(r["bbox"]) == 4 and "segmentation" in r for r in results)
    summary = []
    for iou_type in ("bbox", "segm"):
        m = evaluate_coco(ds.coco, results, iou_type, summary_out=summary)
        assert set(m) >= {"AP", "AP50", "AP75"} and all(0.0 <= v <= 1.0 for v in m.values())
    assert "Average Precision" in summary[0]
    assert evaluate_coco(ds.coco, [], "bbox")["AP"] == 0.0


def test_shapes_dataset_is_deterministic(tmp_path):
    a = make_shapes_dataset(str(tmp_path / "a"), 3, "train", seed=1, size=(96, 80))
    b = make_shapes_dataset(str(tmp_path / "b"), 3, "train", seed=1, size=(96, 80))
    with open(a) as fa, open(b) as fb:
        assert json.load(fa) == json.load(fb)
    assert open(str(tmp_path / "a" / "train" / "0001.jpg"), "rb").read() == \
        open(str(tmp_path / "b" / "train" / "0001.jpg"), "rb").read()


def test_detect_script_checkpoints_resumes_and_evaluates(shapes, tmp_path, capsys):
    import detect
    folder, ann = shapes
    out = str(tmp_path / "run")

    def args(*extra):
        a = detect.get_args_parser().parse_args([
            "--data", folder, "--ann", ann, "--val-ann", ann, "--task", "bbox",
            "--min-size", "64", "--max-size", "96", "--batch-size", "2", "--workers", "0",
            "--output-dir", out, "--lr", "0.002", "--box-batch-size-per-image", "32",
            "--rpn-post-nms-top-n", "100", "--no-progress", "--threads", "1", *extra])
        return detect.fill_defaults(a, detect.DEFAULTS)

    history = detect.main(args("--epochs", "1", "--eval-before"))
    assert [h["epoch"] for h in history] == [0, 1]
    ckpt = load_checkpoint(os.path.join(out, "checkpoint.pth"))
    assert ckpt["epoch"] == 1 and ckpt["cat_ids"] == [2, 5, 9]
    assert ChannelSet.parse(ckpt["channels"]) == ChannelSet.parse("24S")
    assert ckpt["stats"]["geometry"]["kind"] == "detection"
    history = detect.main(args("--epochs", "2", "--resume", os.path.join(out, "checkpoint.pth")))
    assert [h["epoch"] for h in history] == [0, 1, 2]
    capsys.readouterr()
    metrics = detect.main(args("--evaluate", os.path.join(out, "checkpoint.pth")))
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("bbox AP ") and set(metrics) == {"bbox"}
