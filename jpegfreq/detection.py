"""COCO-format detection data on JPEG DCT cubes: one geometry for the cube, the boxes and the masks.

The paper's detection pre-processing (Sec. 4.3): resize keeping the aspect ratio so that the
short side is ``min_size`` unless the long side would exceed ``max_size`` (800 / 1333), flip
with p = 0.5 when training, and take the frequency cube at a quarter of the resized size:

    image w x h  --resize-->  W' x H' pixels (multiples of 4)  --flip?-->
    cube = jpegfreq.cube(file, Geometry(out_h=2H', out_w=2W', box=(0, 0, w, h), flip))
         = (C, H'/4, W'/4): the operator targets a 2x output grid, 8 samples per block

A cube cell is therefore 4 resized pixels, the stride an RGB ResNet reaches after its stem.
Boxes and masks go through the very numbers the cube used: x' = x * W'/w, y' = y * H'/h, a flip
maps x' to W' - x', and masks are resampled by the same 1-D filter (jpegfreq.geometry) as the
pixels, then thresholded at 1/2. Targets are what torchvision's detection models expect.

    ds = CocoJpeg("val2017/", "instances_val2017.json", source="jpeg-coeffs", channels="24S")
    cube, target = ds[0]      # (24, H'/4, W'/4) float32; target["boxes"] (N, 4) xyxy in W' x H'
    results = ds.to_coco(target, prediction)           # back to source pixels, COCO json dicts
    evaluate_coco(ds.coco, results, "segm")            # {"AP": ..., "AP50": ..., ...}

Also here: per-channel statistics for detection cubes (``compute_detection_stats``) and a
synthetic COCO-format shapes set for demos and tests (``make_shapes_dataset``).
"""
import contextlib
import io
import json
import math
import os
import sys
from dataclasses import dataclass
from typing import Optional

import numpy as np

from .channels import ChannelSet
from .errors import JpegError
from .geometry import Geometry, resample_plane
from .pipeline import SOURCES, cube
from .reader import read_header
from .stats import Stats, StatsAccumulator

__all__ = [
    "CocoJpeg",
    "DetectionGeometry",
    "collate",
    "compute_detection_stats",
    "detection_geometry",
    "evaluate_coco",
    "make_shapes_dataset",
    "PIXELS_PER_CELL",
]

#: Resized-image pixels per cube cell (2x output grid / 8 samples per block).
PIXELS_PER_CELL = 4
_COCO_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl",
                 "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


# ---------------------------------------------------------------------------
# Geometry
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class DetectionGeometry:
    """One image's detection geometry: source width x height -> resized out_w x out_h, flip.

    out_w, out_h are multiples of PIXELS_PER_CELL, so the cube has out_h/4 x out_w/4 cells.
    Everything downstream (targets, predictions, masks) is in the resized frame; the methods
    map boxes and masks between the frames with the same numbers the cube was built with.
    """

    width: int
    height: int
    out_w: int
    out_h: int
    flip: bool = False

    def __post_init__(self):
        if min(self.width, self.height, self.out_w, self.out_h) <= 0:
            raise ValueError(f"empty geometry {self}")
        if self.out_w % PIXELS_PER_CELL or self.out_h % PIXELS_PER_CELL:
            raise ValueError(f"resized size {self.out_w}x{self.out_h} must be multiples of "
                             f"{PIXELS_PER_CELL}")

    @property
    def scale_x(self) -> float:
        return self.out_w / self.width

    @property
    def scale_y(self) -> float:
        return self.out_h / self.height

    @property
    def cube_shape(self):
        """(cells high, cells wide) of the cube: (out_h / 4, out_w / 4)."""
        return self.out_h // PIXELS_PER_CELL, self.out_w // PIXELS_PER_CELL

    def cube_geometry(self) -> Geometry:
        """The jpegfreq Geometry whose cube is (C, out_h/4, out_w/4): whole image, 2x grid."""
        k = 8 // PIXELS_PER_CELL
        return Geometry(out_h=k * self.out_h, out_w=k * self.out_w,
                        box=(0.0, 0.0, float(self.width), float(self.height)), flip=self.flip)

    def resample(self, plane: np.ndarray) -> np.ndarray:
        """A (height, width) plane resized (and flipped) to (out_h, out_w): the cube's filter."""
        plane = np.ascontiguousarray(plane, np.float32)
        if plane.shape != (self.height, self.width):
            raise ValueError(f"plane {plane.shape} is not the source size "
                             f"{self.height}x{self.width}")
        return resample_plane(plane, self.height, self.width, 1, 1,
                              (0.0, 0.0, float(self.width), float(self.height)),
                              self.out_h, self.out_w, self.flip)

    def _scales(self):
        return np.array([self.scale_x, self.scale_y, self.scale_x, self.scale_y])

    def boxes_to_resized(self, boxes: np.ndarray) -> np.ndarray:
        """(N, 4) xyxy source pixels -> xyxy resized pixels (scaled, flipped, clipped)."""
        b = np.asarray(boxes, np.float64).reshape(-1, 4) * self._scales()
        if self.flip:
            b = np.stack([self.out_w - b[:, 2], b[:, 1], self.out_w - b[:, 0], b[:, 3]], 1)
        b[:, 0::2] = b[:, 0::2].clip(0, self.out_w)
        b[:, 1::2] = b[:, 1::2].clip(0, self.out_h)
        return b.astype(np.float32)

    def boxes_to_source(self, boxes) -> np.ndarray:
        """(N, 4) xyxy resized pixels (numpy or tensor) -> xyxy source pixels (float64)."""
        if hasattr(boxes, "detach"):
            boxes = boxes.detach().cpu().numpy()
        b = np.asarray(boxes, np.float64).reshape(-1, 4).copy()
        if self.flip:
            b = np.stack([self.out_w - b[:, 2], b[:, 1], self.out_w - b[:, 0], b[:, 3]], 1)
        return b / self._scales()

    def mask_to_resized(self, mask: np.ndarray) -> np.ndarray:
        """(height, width) binary mask -> uint8 (out_h, out_w): same filter, threshold 1/2."""
        return (self.resample(mask) >= 0.5).astype(np.uint8)

    def masks_to_source(self, masks):
        """(N, [1,] out_h, out_w) mask probabilities (tensor) -> float (N, height, width).

        Undoes the flip, then bilinear resize with pixel-edge alignment (align_corners=False),
        the inverse of the linear map the forward geometry used.
        """
        import torch
        from torch.nn import functional as F
        m = torch.as_tensor(masks)
        if m.dim() == 3:
            m = m[:, None]
        if tuple(m.shape[-2:]) != (self.out_h, self.out_w):
            raise ValueError(f"masks {tuple(m.shape)} are not in the resized frame "
                             f"{self.out_h}x{self.out_w}")
        if self.flip:
            m = m.flip(-1)
        if m.shape[0] == 0:
            return m.new_zeros((0, self.height, self.width), dtype=torch.float32)
        return F.interpolate(m.float(), size=(self.height, self.width), mode="bilinear",
                             align_corners=False)[:, 0]


def resized_size(width: int, height: int, min_size: int = 800, max_size: int = 1333,
                 multiple: int = PIXELS_PER_CELL):
    """(W', H'): short side min_size unless the long side would pass max_size; multiples of 4.

    The scale is min(min_size / short, max_size / long) (torchvision's rule); each side is
    then rounded to the nearest multiple and kept within [multiple, max_size].
    """
    if min_size <= 0 or max_size < min_size:
        raise ValueError(f"need 0 < min_size <= max_size, got {min_size}, {max_size}")
    if width <= 0 or height <= 0:
        raise ValueError(f"empty image {width}x{height}")
    s = min(min_size / min(width, height), max_size / max(width, height))
    top = max(multiple, max_size // multiple * multiple)

    def side(n):
        return int(min(top, max(multiple, round(n * s / multiple) * multiple)))

    return side(width), side(height)


def detection_geometry(width: int, height: int, min_size: int = 800, max_size: int = 1333,
                       flip: bool = False) -> DetectionGeometry:
    """The DetectionGeometry of a width x height image (see resized_size)."""
    w2, h2 = resized_size(width, height, min_size, max_size)
    return DetectionGeometry(int(width), int(height), w2, h2, bool(flip))


# ---------------------------------------------------------------------------
# Dataset
# ---------------------------------------------------------------------------

def _quiet_coco(ann):
    from pycocotools.coco import COCO
    if isinstance(ann, COCO):
        return ann
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(os.fspath(ann))


def _image_size(data: bytes, path: str):
    try:
        hdr = read_header(data)
        return hdr.width, hdr.height
    except JpegError:
        from PIL import Image
        try:
            with Image.open(io.BytesIO(data)) as im:
                return im.size
        except Exception as e:
            raise JpegError(path, f"cannot read: {e}") from None


def detection_stats_geometry(min_size: int, max_size: int) -> dict:
    """What detection statistics record (and are checked against) as their geometry."""
    return {"kind": "detection", "min_size": int(min_size), "max_size": int(max_size),
            "pixels_per_cell": PIXELS_PER_CELL}


class CocoJpeg:
    """A COCO-format detection / instance segmentation set whose inputs are DCT cubes.

    root_images: folder the annotation's file_name entries are relative to. ann_json: path of
    the COCO json (or a pycocotools COCO). source (default "jpeg-coeffs"): "jpeg-coeffs"
    (compressed domain), "spatial" (decode, resize, block DCT) or "rgb" ((3, H', W') in
    [0, 1] for the torchvision baseline, normalised by its own transform). channels (default
    "24S"). train (default False): sample flips, drop images without usable annotations.
    max_size / min_size (default 1333 / 800): the resize rule (resized_size). flip_p (default
    0.5, train only). stats (default None = unnormalised): a jpegfreq.stats.Stats computed
    for detection cubes of these sizes (compute_detection_stats); other statistics are an
    error. seed (default 0): flips are a function of (seed, epoch, image id); set_epoch(e)
    draws new ones. masks (default True): include instance masks (Mask R-CNN). dtype
    (default "float32"). remove_empty (default = train): keep only images with at least one
    non-crowd box. image_ids (default all): restrict to these ids (in this order).

    item i -> (tensor (C, H'/4, W'/4) or (3, H', W'), target) with target = {"boxes" float32
    (N, 4) xyxy resized px, "labels" int64 (N,) contiguous 1..K, "masks" uint8 (N, H', W'),
    "image_id" int, "area" float32 (N,) resized px^2, "iscrowd" int64 (N,) zeros, "geometry"
    DetectionGeometry}. Crowd regions are not training targets (COCOeval still reads them
    from the json). Labels: ``classes[label - 1]`` is the name, ``cat_ids[label - 1]`` the
    json category id; num_classes = K + 1 (background). Cost per 640x480 image at 800/1333:
    20 ms for the jpeg-coeffs cube of a noise-filled JPEG (shared core) plus 2 ms
    per instance mask.
    """

    def __init__(self, root_images, ann_json, source="jpeg-coeffs", channels="24S", train=False,
                 max_size=1333, min_size=800, flip_p=0.5, stats=None, seed=0, masks=True,
                 dtype="float32", remove_empty=None, image_ids=None):
        if source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, not {source!r}")
        if dtype not in ("float32", "float16"):
            raise ValueError(f"dtype must be float32 or float16, not {dtype!r}")
        resized_size(64, 64, min_size, max_size)   # validates the sizes
        self.root = os.fspath(root_images)
        self.coco = _quiet_coco(ann_json)
        self.source = source
        self.channels = None if source == "rgb" else ChannelSet.parse(channels)
        self.train = bool(train)
        self.min_size, self.max_size = int(min_size), int(max_size)
        self.flip_p = float(flip_p) if self.train else 0.0
        self.seed = int(seed)
        self.epoch = 0
        self.masks = bool(masks)
        self.dtype = np.dtype(dtype)
        self.stats = stats
        self._mean, self._inv_std = self._check_stats(stats)

        self.cat_ids = sorted(self.coco.cats)
        self.classes = [self.coco.cats[c]["name"] for c in self.cat_ids]
        self.cat_to_label = {c: i + 1 for i, c in enumerate(self.cat_ids)}
        self.num_classes = len(self.cat_ids) + 1

        ids = list(image_ids) if image_ids is not None else sorted(self.coco.imgs)
        missing = [i for i in ids if i not in self.coco.imgs]
        if missing:
            raise ValueError(f"image ids {missing[:5]} are not in the annotation file")
        if self.train if remove_empty is None else remove_empty:
            ids = [i for i in ids if self._usable(self.coco.imgToAnns.get(i, []))]
        self.ids = ids

    def _check_stats(self, stats):
        if stats is None:
            return None, None
        if self.source == "rgb":
            raise ValueError("source='rgb' is normalised by the model's own transform "
                             "(ImageNet mean/std); pass stats=None")
        if (stats.source == "rgb") != (self.source == "rgb"):
            raise ValueError(f"statistics computed for source {stats.source!r} cannot "
                             f"normalize {self.source!r}")
        want = detection_stats_geometry(self.min_size, self.max_size)
        if stats.geometry != want:
            raise ValueError(
                f"statistics were computed for geometry {stats.geometry}, not detection cubes at "
                f"min_size={self.min_size}, max_size={self.max_size} (a 2x grid has other AC "
                "statistics); use jpegfreq.detection.compute_detection_stats")
        mean, std = stats.select(self.channels)
        std = np.where(std > 1e-6, std, 1.0)
        return (mean.astype(np.float32)[:, None, None],
                (1.0 / std).astype(np.float32)[:, None, None])

    @staticmethod
    def _usable(anns):
        return any(not a.get("iscrowd", 0) and a["bbox"][2] > 0 and a["bbox"][3] > 0
                   for a in anns)

    def __len__(self):
        return len(self.ids)

    def set_epoch(self, epoch: int):
        """Flips for a new epoch (call before iterating; workers see it through pickling)."""
        self.epoch = int(epoch)

    def geometry(self, index: int, flip: Optional[bool] = None) -> DetectionGeometry:
        """Item index's geometry; flip None draws it as __getitem__ does."""
        image_id = self.ids[index]
        info = self.coco.imgs[image_id]
        if flip is None:
            flip = False
            if self.flip_p > 0:
                rng = np.random.default_rng([self.seed, self.epoch, image_id])
                flip = bool(rng.random() < self.flip_p)
        return detection_geometry(info["width"], info["height"], self.min_size, self.max_size,
                                  flip)

    def path(self, index: int) -> str:
        return os.path.join(self.root, self.coco.imgs[self.ids[index]]["file_name"])

    def load(self, index: int, geometry: DetectionGeometry) -> np.ndarray:
        """The network input of item index under geometry (numpy, normalised if stats)."""
        path = self.path(index)
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            raise JpegError(path, f"cannot read: {e.strerror}", "io") from None
        size = _image_size(data, path)
        if size != (geometry.width, geometry.height):
            raise ValueError(f"{path}: the file is {size[0]}x{size[1]} but the annotation says "
                             f"{geometry.width}x{geometry.height}")
        if self.source == "rgb":
            return _rgb_resized(data, path, geometry).astype(self.dtype, copy=False)
        x = cube(data, self.channels, source=self.source, geometry=geometry.cube_geometry())
        if self._mean is not None:
            x -= self._mean
            x *= self._inv_std
        return x.astype(self.dtype, copy=False)

    def target(self, index: int, geometry: DetectionGeometry) -> dict:
        """The torchvision target of item index under geometry (see the class docstring)."""
        import torch
        image_id = self.ids[index]
        anns = [a for a in self.coco.imgToAnns.get(image_id, [])
                if not a.get("iscrowd", 0) and a["bbox"][2] > 0 and a["bbox"][3] > 0]
        xyxy = np.array([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2],
                          a["bbox"][1] + a["bbox"][3]] for a in anns], np.float64).reshape(-1, 4)
        boxes = geometry.boxes_to_resized(xyxy)
        keep = np.nonzero((boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1]))[0]
        anns = [anns[i] for i in keep]
        boxes = boxes[keep]
        target = {
            "boxes": torch.from_numpy(boxes),
            "labels": torch.tensor([self.cat_to_label[a["category_id"]] for a in anns],
                                   dtype=torch.int64),
            "image_id": int(image_id),
            "area": torch.from_numpy(((boxes[:, 2] - boxes[:, 0]) *
                                      (boxes[:, 3] - boxes[:, 1])).astype(np.float32)),
            "iscrowd": torch.zeros(len(anns), dtype=torch.int64),
            "geometry": geometry,
        }
        if self.masks:
            m = np.zeros((len(anns), geometry.out_h, geometry.out_w), np.uint8)
            for i, a in enumerate(anns):
                m[i] = geometry.mask_to_resized(self.coco.annToMask(a))
            target["masks"] = torch.from_numpy(m)
        return target

    def __getitem__(self, index):
        import torch
        g = self.geometry(index)
        return torch.from_numpy(self.load(index, g)), self.target(index, g)

    def to_coco(self, target_or_geometry, prediction, image_id=None, mask_threshold=0.5,
                score_threshold=0.0):
        """A model's prediction for one image -> COCO result dicts in source pixels.

        target_or_geometry: the item's target (its "geometry" and "image_id" are used) or a
        DetectionGeometry (then image_id is required). prediction: {"boxes" (N, 4) xyxy
        resized px, "labels", "scores", optional "masks" (N, 1, H', W') probabilities}.
        Returns [{"image_id", "category_id", "bbox" xywh, "score"[, "segmentation" RLE]}].
        """
        if isinstance(target_or_geometry, DetectionGeometry):
            geometry = target_or_geometry
            if image_id is None:
                raise ValueError("image_id is needed with a bare geometry")
        else:
            geometry = target_or_geometry["geometry"]
            image_id = target_or_geometry["image_id"] if image_id is None else image_id
        scores = prediction["scores"].detach().cpu().numpy()
        keep = np.nonzero(scores >= score_threshold)[0]
        if len(keep) == 0:
            return []
        boxes = geometry.boxes_to_source(prediction["boxes"])[keep]
        labels = prediction["labels"].detach().cpu().numpy()[keep]
        rles = None
        if "masks" in prediction:
            from pycocotools import mask as mask_utils
            rles = []
            for start in range(0, len(keep), 16):    # bounded memory at COCO sizes
                idx = keep[start:start + 16]
                m = geometry.masks_to_source(prediction["masks"][idx].detach().cpu())
                m = (m >= mask_threshold).numpy().astype(np.uint8)
                for r in mask_utils.encode(np.asfortranarray(m.transpose(1, 2, 0))):
                    r["counts"] = r["counts"].decode("ascii")
                    rles.append(r)
        out = []
        for i in range(len(keep)):
            x0, y0, x1, y1 = (float(v) for v in boxes[i])
            res = {"image_id": int(image_id), "category_id": int(self.cat_ids[int(labels[i]) - 1]),
                   "bbox": [round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)],
                   "score": round(float(scores[keep[i]]), 5)}
            if rles is not None:
                res["segmentation"] = rles[i]
            out.append(res)
        return out


def collate(batch):
    """DataLoader collate: (tuple of inputs, tuple of targets). Torchvision's detection models
    take lists of differently sized images; the model's transform pads the batch (cubes: to a
    multiple of 8 cells = 32 px) once the unpadded sizes are recorded."""
    return tuple(zip(*batch))


def _rgb_resized(data: bytes, path: str, g: DetectionGeometry) -> np.ndarray:
    """(3, out_h, out_w) float32 in [0, 1]: decode, then the cube's resize filter and flip."""
    from PIL import Image
    try:
        with Image.open(io.BytesIO(data)) as im:
            rgb = np.asarray(im.convert("RGB"), np.float32)
    except Exception as e:
        raise JpegError(path, f"cannot decode: {e}") from None
    out = np.stack([g.resample(rgb[..., i]) for i in range(3)])
    out *= 1.0 / 255.0
    return out


# ---------------------------------------------------------------------------
# Statistics and evaluation
# ---------------------------------------------------------------------------

def compute_detection_stats(dataset: CocoJpeg, limit: Optional[int] = None,
                            progress: bool = True) -> Stats:
    """Pooled per-channel mean/std of a dataset's detection cubes (no flip, unnormalised).

    dataset: a CocoJpeg (its source, channels, min_size, max_size are used; its own stats
    are ignored). limit (default all): use the first n images. The result records
    detection_stats_geometry(min_size, max_size), which CocoJpeg checks; size is (0, 0)
    because detection cubes vary in size (a classification geometry never matches it).
    """
    from tqdm import tqdm
    if dataset.source == "rgb":
        raise ValueError("rgb inputs are normalised by the model; no statistics needed")
    n = len(dataset) if limit is None else min(int(limit), len(dataset))
    if n == 0:
        raise ValueError("no images: cannot compute statistics")
    acc = StatsAccumulator(dataset.channels.count)
    saved = dataset._mean, dataset._inv_std
    dataset._mean = dataset._inv_std = None
    try:
        for i in tqdm(range(n), desc="stats", unit="img", disable=not progress, file=sys.stderr):
            acc.update(dataset.load(i, dataset.geometry(i, flip=False)).astype(np.float32))
    finally:
        dataset._mean, dataset._inv_std = saved
    return acc.result(dataset.channels, dataset.source, (0, 0),
                      detection_stats_geometry(dataset.min_size, dataset.max_size))


def evaluate_coco(coco_gt, results, iou_type="bbox", image_ids=None, summary_out=None) -> dict:
    """COCOeval of result dicts against a ground truth; returns {"AP", "AP50", ..., "ARl"}.

    coco_gt: pycocotools COCO. results: list of COCO result dicts (CocoJpeg.to_coco).
    iou_type: "bbox" or "segm". image_ids (default all of coco_gt): images evaluated (images
    without detections count as misses). summary_out: a list that receives COCOeval's
    printed table as one string. No results at all gives zeros.
    """
    from pycocotools.cocoeval import COCOeval
    if iou_type not in ("bbox", "segm"):
        raise ValueError(f"iou_type must be 'bbox' or 'segm', got {iou_type!r}")
    if not results:
        if summary_out is not None:
            summary_out.append(f"{iou_type}: no detections")
        return {k: 0.0 for k in _COCO_METRICS}
    if iou_type == "segm" and any("segmentation" not in r for r in results):
        raise ValueError("segm evaluation needs results with 'segmentation' (a mask model)")
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        dt = coco_gt.loadRes([dict(r) for r in results])
        ev = COCOeval(coco_gt, dt, iou_type)
        ev.params.imgIds = sorted(coco_gt.getImgIds() if image_ids is None else image_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    if summary_out is not None:
        summary_out.append(buf.getvalue())
    return {k: float(max(v, 0.0)) for k, v in zip(_COCO_METRICS, ev.stats)}


# ---------------------------------------------------------------------------
# Synthetic shapes (demo and tests)
# ---------------------------------------------------------------------------

SHAPE_CLASSES = ("rectangle", "ellipse", "triangle")


def _background(rng, w, h):
    """Smooth colour field + an oriented grating + grain: texture the detector must ignore."""
    from PIL import Image
    low = rng.uniform(40, 215, size=(4, 4, 3)).astype(np.uint8)
    base = np.asarray(Image.fromarray(low).resize((w, h), Image.BICUBIC), np.float32)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    theta, period = rng.uniform(0, math.pi), rng.uniform(6, 24)
    grating = np.sin((xx * math.cos(theta) + yy * math.sin(theta)) * 2 * math.pi / period)
    base += rng.uniform(8, 25) * grating[..., None] * rng.uniform(0.5, 1, size=3)
    base += rng.normal(0, 6, size=base.shape)
    return base


def _shape_mask(rng, kind, box, w, h):
    from PIL import Image, ImageDraw
    x0, y0, x1, y1 = box
    im = Image.new("L", (w, h), 0)
    d = ImageDraw.Draw(im)
    if kind == "ellipse":
        d.ellipse([x0, y0, x1 - 1, y1 - 1], fill=1)
    elif kind == "rectangle":
        # a rectangle turned by up to 30 degrees, fitted inside the box
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        a = rng.uniform(-math.pi / 6, math.pi / 6)
        bw, bh = x1 - x0, y1 - y0
        c, s = abs(math.cos(a)), abs(math.sin(a))
        # half-sides (p, q) with p c + q s = bw/2 and p s + q c = bh/2 when solvable
        det = c * c - s * s
        p, q = (bw / 2 * c - bh / 2 * s) / det, (bh / 2 * c - bw / 2 * s) / det
        if p < 4 or q < 4:
            a, p, q = 0.0, bw / 2, bh / 2
        ca, sa = math.cos(a), math.sin(a)
        pts = [(cx + ca * u - sa * v, cy + sa * u + ca * v)
               for u, v in ((-p, -q), (p, -q), (p, q), (-p, q))]
        d.polygon(pts, fill=1)
    else:
        # apex somewhere on the top edge, base corners at the bottom: never degenerate
        apex = (rng.uniform(x0, x1), y0)
        if rng.random() < 0.5:   # or pointing down
            pts = [(x0, y0), (x1, y0), (rng.uniform(x0, x1), y1)]
        else:
            pts = [apex, (x1, y1), (x0, y1)]
        d.polygon(pts, fill=1)
    return np.asarray(im, np.uint8)


def make_shapes_dataset(root, num_images=60, split="train", seed=0, size=(256, 256),
                        objects=(1, 4), object_size=(40, 120), classes=SHAPE_CLASSES,
                        category_ids=None, quality=90, size_jitter=0.0):
    """Write a COCO-format instance segmentation set of coloured shapes on textured backgrounds.

    root: output folder; images go to root/split/NNNN.jpg, annotations to root/split.json.
    num_images (default 60). seed (default 0). size (default (256, 256)): (width, height);
    size_jitter (default 0): each side varies by up to this fraction. objects (default 1-4
    per image, non-overlapping boxes). object_size (default 40-120 px sides). classes
    (default rectangle, ellipse, triangle). category_ids (default 1..K). quality: JPEG
    quality (4:2:0). Masks are RLE; boxes are the masks' extents. Returns the json path.
    Deterministic in its arguments. About 30 ms per 256x256 image.
    """
    from PIL import Image
    from pycocotools import mask as mask_utils
    rng = np.random.default_rng([seed, sum(map(ord, split))])
    category_ids = list(category_ids or range(1, len(classes) + 1))
    if len(category_ids) != len(classes):
        raise ValueError("one category id per class")
    folder = os.path.join(os.fspath(root), split)
    os.makedirs(folder, exist_ok=True)
    images, anns = [], []
    for n in range(num_images):
        w = int(round(size[0] * (1 + rng.uniform(-size_jitter, size_jitter))))
        h = int(round(size[1] * (1 + rng.uniform(-size_jitter, size_jitter))))
        img = _background(rng, w, h)
        placed = []
        for _ in range(int(rng.integers(objects[0], objects[1] + 1))):
            for _attempt in range(30):
                bw = int(rng.integers(object_size[0], min(object_size[1], w - 2) + 1))
                bh = int(np.clip(bw * math.exp(rng.uniform(-0.5, 0.5)), object_size[0],
                                 min(object_size[1], h - 2)))
                x0, y0 = int(rng.integers(1, w - bw)), int(rng.integers(1, h - bh))
                box = (x0, y0, x0 + bw, y0 + bh)
                if all(box[0] >= b[2] + 4 or box[2] + 4 <= b[0] or box[1] >= b[3] + 4
                       or box[3] + 4 <= b[1] for b, _, _ in placed):
                    break
            else:
                continue
            cls = int(rng.integers(len(classes)))
            mask = _shape_mask(rng, classes[cls], box, w, h)
            if mask.sum() < 16:
                continue
            bg = img[mask.astype(bool)].mean(0)
            for _c in range(20):   # a colour that stands out from what is behind it
                colour = rng.uniform(0, 255, size=3)
                if np.abs(colour - bg).sum() > 150:
                    break
            tex = rng.normal(0, 8, size=(h, w, 1))
            img = np.where(mask[..., None] > 0, colour + tex, img)
            placed.append((box, cls, mask))
        fname = f"{n:04d}.jpg"
        Image.fromarray(np.clip(img, 0, 255).round().astype(np.uint8)).save(
            os.path.join(folder, fname), quality=quality, subsampling="4:2:0")
        image_id = n + 1
        images.append({"id": image_id, "file_name": fname, "width": w, "height": h})
        for box, cls, mask in placed:
            ys, xs = np.nonzero(mask)
            rle = mask_utils.encode(np.asfortranarray(mask))
            rle["counts"] = rle["counts"].decode("ascii")
            x0, y0 = int(xs.min()), int(ys.min())
            anns.append({"id": len(anns) + 1, "image_id": image_id,
                         "category_id": category_ids[cls], "segmentation": rle,
                         "area": float(mask.sum()), "iscrowd": 0,
                         "bbox": [x0, y0, int(xs.max()) + 1 - x0, int(ys.max()) + 1 - y0]})
    ann_path = os.path.join(os.fspath(root), f"{split}.json")
    data = {"images": images, "annotations": anns,
            "categories": [{"id": c, "name": n} for c, n in zip(category_ids, classes)]}
    tmp = f"{ann_path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(data, f)
    os.replace(tmp, ann_path)
    return ann_path
