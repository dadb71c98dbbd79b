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
    jpegfreq.coco.evaluate_coco(ds.coco, results, "segm")   # {"AP": ..., "AP50": ..., ...}

The inputs come from the pipeline's own calls: jpegfreq.cube for the cube (normalised there by
Stats, checked by Stats.check) and jpegfreq.pipeline.rgb_image for the RGB baseline. Statistics
of detection cubes: jpegfreq.stats.compute_detection_stats; COCO evaluation: jpegfreq.coco; a
synthetic COCO-format shapes set: jpegfreq.synthetic.make_shapes_dataset.
"""
import os
from dataclasses import dataclass
from typing import Optional

import numpy as np

from .channels import ChannelSet
from .coco import load_coco
from .geometry import PIXELS_PER_CELL, Geometry, resample_plane, resized_size
from .pipeline import SOURCES, cube, rgb_image
from .source import read_source

__all__ = [
    "CocoJpeg",
    "DetectionGeometry",
    "collate",
    "detection_geometry",
    "resized_size",
    "PIXELS_PER_CELL",
]



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

    #: Detection geometry is in stored pixels (the annotation's frame): no EXIF orientation.
    exif = False

    @property
    def box(self):
        """The source box: the whole image, (0, 0, width, height)."""
        return 0.0, 0.0, float(self.width), float(self.height)

    def box_for(self, width: int, height: int):
        """The source box (the whole image), as Geometry.box_for gives it; with out_h, out_w,
        flip and exif this makes the geometry jpegfreq.pipeline.rgb_image resizes RGB by."""
        return self.box

    def cube_geometry(self) -> Geometry:
        """The jpegfreq Geometry whose cube is (C, out_h/4, out_w/4): whole image, 2x grid."""
        k = 8 // PIXELS_PER_CELL
        return Geometry(out_h=k * self.out_h, out_w=k * self.out_w, box=self.box,
                        flip=self.flip)

    def resample(self, plane: np.ndarray) -> np.ndarray:
        """A (height, width) plane resized (and flipped) to (out_h, out_w): the cube's filter."""
        plane = np.ascontiguousarray(plane, np.float32)
        if plane.shape != (self.height, self.width):
            raise ValueError(f"plane {plane.shape} is not the source size "
                             f"{self.height}x{self.width}")
        return resample_plane(plane, self.height, self.width, 1, 1, self.box,
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


def detection_geometry(width: int, height: int, min_size: int = 800, max_size: int = 1333,
                       flip: bool = False) -> DetectionGeometry:
    """The DetectionGeometry of a width x height image (see resized_size)."""
    w2, h2 = resized_size(width, height, min_size, max_size)
    return DetectionGeometry(int(width), int(height), w2, h2, bool(flip))


# ---------------------------------------------------------------------------
# Dataset
# ---------------------------------------------------------------------------

class CocoJpeg:
    """A COCO-format detection / instance segmentation set whose inputs are DCT cubes.

    root_images: folder the annotation's file_name entries are relative to. ann_json: path of
    the COCO json (or a pycocotools COCO). source (default "jpeg-coeffs"): "jpeg-coeffs"
    (compressed domain), "spatial" (decode, resize, block DCT) or "rgb" ((3, H', W') in
    [0, 1] for the torchvision baseline, normalised by its own transform). channels (default
    "24S"). train (default False): sample flips, drop images without usable annotations.
    max_size / min_size (default 1333 / 800): the resize rule (resized_size). flip_p (default
    0.5, train only). stats (default None = unnormalised): a jpegfreq.stats.Stats computed
    for detection cubes of these sizes (jpegfreq.stats.compute_detection_stats), folded in by
    jpegfreq.cube; Stats.check refuses other statistics. seed (default 0): flips are a
    function of (seed, epoch, image id); set_epoch(e) draws new ones. masks (default True):
    include instance masks (Mask R-CNN). dtype (default "float32"). remove_empty (default =
    train): keep only images with at least one non-crowd box. image_ids (default all):
    restrict to these ids (in this order).

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
        self.coco = load_coco(ann_json)
        self.source = source
        self.channels = None if source == "rgb" else ChannelSet.parse(channels)
        self.train = bool(train)
        self.min_size, self.max_size = int(min_size), int(max_size)
        self.flip_p = float(flip_p) if self.train else 0.0
        self.seed = int(seed)
        self.epoch = 0
        self.masks = bool(masks)
        self.dtype = np.dtype(dtype)
        if stats is not None:
            if source == "rgb":
                raise ValueError("source='rgb' is normalised by the model's own transform "
                                 "(ImageNet mean/std); pass stats=None")
            from .stats import detection_stats_geometry
            stats.check(self.channels, source, detection_stats_geometry(min_size, max_size))
        self.stats = stats

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

    def load(self, index: int, geometry: DetectionGeometry, normalise: bool = True) -> np.ndarray:
        """The network input of item index under geometry (numpy; normalised by the set's
        stats unless normalise=False)."""
        src = read_source(self.path(index))
        if src.size != (geometry.width, geometry.height):
            raise ValueError(f"{src.name}: the file is {src.width}x{src.height} but the "
                             f"annotation says {geometry.width}x{geometry.height}")
        if self.source == "rgb":
            return rgb_image(src, geometry).astype(self.dtype, copy=False)
        return cube(src, self.channels, source=self.source, geometry=geometry.cube_geometry(),
                    stats=self.stats if normalise else None, dtype=self.dtype)

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
