"""Image folders as cubes for training: ImageFolder layout, per-sample seeded geometry.

    ds = JpegFolder("data", "train", source="jpeg-coeffs", channels="24S", size=448, train=True)
    loader = DataLoader(ds, batch_size=32, collate_fn=collate_skip_bad, num_workers=2)
    for x, y, n_bad in loader: ...

Layout: ROOT/SPLIT/CLASS/IMAGE, classes in sorted order, any extension in
jpegfreq.stats.IMAGE_EXTENSIONS (JPEGs take the compressed path; other images only
the spatial and rgb sources).

Reproducibility: a training sample's crop and flip come from a numpy Generator seeded by
(seed, epoch, index), so they do not depend on the worker count, the worker a sample lands
on, or the order samples are drawn in.  Call set_epoch(epoch) before each epoch (workers
must not be persistent across epochs, or they keep the old epoch).

Bad images: with on_bad_image="skip" an unreadable file becomes a BadImage sentinel,
which collate_skip_bad drops and counts; the batch is then smaller (no other sample is
substituted: that would change the label distribution silently).  With "error" the
sample raises BadImageError naming the file.
"""
import os
from typing import NamedTuple, Optional

import numpy as np

from .errors import JpegError
from .geometry import eval_geometry, sample_train
from .source import read_source
from .stats import IMAGE_EXTENSIONS

__all__ = ["JpegFolder", "BadImage", "BadImageError", "collate_skip_bad", "find_classes",
           "default_size"]


#: last word of the (seed, epoch, .) generator seeds that are not a sample's own
_ORDER_KEY = 2 ** 64 - 1


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator of sample ``index`` in ``epoch``: its crop and flip, whatever reads it
    (JpegFolder, JpegLoader) and however many threads or processes do."""
    return np.random.default_rng([int(seed), int(epoch), int(index)])


def epoch_rng(seed: int, epoch: int, key: int = _ORDER_KEY) -> np.random.Generator:
    """The generator of an epoch's order (sample permutation, shard order, shuffle buffer):
    distinct from every per-sample generator [seed, epoch, index] (JpegFolder.rng)."""
    return np.random.default_rng([int(seed), int(epoch), int(key)])


class BadImage(NamedTuple):
    """Sentinel for a sample that could not be read: its index, path and the reason."""
    index: int
    path: str
    reason: str


class BadImageError(JpegError):
    """An image of a data set could not be read (on_bad_image="error")."""

    def __init__(self, source, reason=None, kind="jpeg"):
        if reason is None:
            # rebuilt from its message alone: DataLoader re-raises worker errors that way
            ValueError.__init__(self, source)
            self.source, self.reason, self.kind = None, source, kind
        else:
            super().__init__(source, reason, kind)


def default_size(source: str, arch: str = "resnet50") -> int:
    """Crop side in pixels: 224 for rgb, 896 for MobileNetV2, else 448 (56x56 cubes)."""
    if source == "rgb":
        return 224
    return 896 if arch in ("mobilenetv2", "mobilenet_v2") else 448


def find_classes(folder):
    """Sorted class folder names under ``folder`` (hidden folders ignored)."""
    try:
        entries = sorted(e.name for e in os.scandir(folder)
                         if e.is_dir() and not e.name.startswith("."))
    except FileNotFoundError:
        raise FileNotFoundError(f"no such folder: {folder}") from None
    if not entries:
        raise FileNotFoundError(f"no class folders under {folder} (expected {folder}/CLASS/*.jpg)")
    return entries


class JpegFolder:
    """A torch map-style data set of (cube tensor, label) from ROOT/SPLIT/CLASS/IMAGE.

    root: data folder.  split: "train", "val", ... (None: root itself holds the classes).
    source: "jpeg-coeffs" (default), "spatial" or "rgb".
    channels: channel set spec or ChannelSet (default "24S"; ignored for rgb).
    size: crop side in pixels (default: 224 for rgb, else 448 -> 56x56 cube).
    train: True samples RandomResizedCrop + flip per sample; False uses the eval geometry.
    stats: jpegfreq.stats.Stats folded into the cube (default None: unnormalized).
    seed: base of the per-sample generators (default 0).
    on_bad_image: "skip" (default; return a BadImage sentinel) or "error" (raise).
    dtype: "float32" (default) or "float16" cubes.
    with_index: also return the sample index (x, y, index) (default False).
    classes: fix the class list (default: the sorted folders of this split).
    Cost per item: one file read plus jpegfreq.cube (about 2 ms for a 500x375 JPEG, 24S).
    """

    def __init__(self, root, split="train", source="jpeg-coeffs", channels="24S",
                 size: Optional[int] = None, train: bool = True, stats=None, seed: int = 0,
                 on_bad_image: str = "skip", dtype="float32", with_index: bool = False,
                 classes=None):
        from .pipeline import SOURCES, channel_set
        if source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, not {source!r}")
        if on_bad_image not in ("skip", "error"):
            raise ValueError(f"on_bad_image must be 'skip' or 'error', not {on_bad_image!r}")
        self.root = os.fspath(root)
        self.split = split
        self.folder = self.root if split is None else os.path.join(self.root, split)
        self.source = source
        self.channels = None if source == "rgb" else channel_set(channels) \
            if isinstance(channels, str) else channels
        self.size = int(size or default_size(source))
        self.train = bool(train)
        self.stats = stats
        self.seed = int(seed)
        self.on_bad_image = on_bad_image
        self.dtype = dtype
        self.with_index = with_index
        self.epoch = 0
        self.eval_geometry = eval_geometry(self.size)
        self.classes = list(classes) if classes is not None else find_classes(self.folder)
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        self.samples = []
        for c in self.classes:
            d = os.path.join(self.folder, c)
            if not os.path.isdir(d):
                continue
            for dirpath, _, files in sorted(os.walk(d, followlinks=True)):
                for f in sorted(files):
                    if f.lower().endswith(IMAGE_EXTENSIONS):
                        self.samples.append((os.path.join(dirpath, f), self.class_to_idx[c]))
        if not self.samples:
            raise FileNotFoundError(f"no images under {self.folder}/CLASS/ "
                                    f"(extensions: {' '.join(IMAGE_EXTENSIONS)})")
        self.targets = [y for _, y in self.samples]

    def __len__(self):
        return len(self.samples)

    def set_epoch(self, epoch: int):
        """Select the epoch whose geometries __getitem__ samples."""
        self.epoch = int(epoch)

    def rng(self, index: int) -> np.random.Generator:
        """The generator of sample ``index`` in the current epoch."""
        return sample_rng(self.seed, self.epoch, index)

    def geometry(self, index: int, src=None):
        """The Geometry sample ``index`` gets this epoch (training: sampled from the stored
        size, read from ``src``, a jpegfreq.source.Source of the file, or the file itself)."""
        if not self.train:
            return self.eval_geometry
        src = read_source(self.samples[index][0] if src is None else src)
        return sample_train(src.width, src.height, self.size, self.rng(index))

    def _load(self, index):
        from .pipeline import cube
        path = self.samples[index][0]
        # training reads the file once for its size and its cube; eval hands cube the path
        src = read_source(path) if self.train else path
        return cube(src, self.channels if self.channels is not None else "24S", self.size,
                    self.source, self.geometry(index, src), self.stats, self.dtype)

    def __getitem__(self, index):
        import torch
        path, label = self.samples[index]
        try:
            x = self._load(index)
        except Exception as e:  # any failure of one image is that image's, never the batch's
            reason = e.reason if isinstance(e, JpegError) else f"{type(e).__name__}: {e}"
            if self.on_bad_image == "error":
                raise BadImageError(path, f"{reason} (use --on-bad-image skip to skip such files)",
                                    getattr(e, "kind", "jpeg")) from e
            return BadImage(int(index), path, str(reason))
        x = torch.from_numpy(x)
        return (x, label, index) if self.with_index else (x, label)

    def __repr__(self):
        return (f"JpegFolder({self.folder!r}, {len(self)} images, {len(self.classes)} classes, "
                f"source={self.source!r}, channels={str(self.channels)!r}, size={self.size}, "
                f"train={self.train})")


def collate_skip_bad(batch):
    """Collate (x, y[, index]) samples, dropping BadImage sentinels.

    Returns (x (N, ...), y int64 (N,), n_bad[, index int64 (N,)]): n_bad is how many
    sentinels were dropped; index comes with with_index=True samples.  When the whole
    batch was bad the result is (None, None, n_bad).
    """
    import torch
    good = [b for b in batch if not isinstance(b, BadImage)]
    n_bad = len(batch) - len(good)
    if not good:
        return None, None, n_bad
    x = torch.stack([b[0] for b in good])
    y = torch.as_tensor([int(b[1]) for b in good], dtype=torch.int64)
    if len(good[0]) > 2:
        return x, y, n_bad, torch.as_tensor([int(b[2]) for b in good], dtype=torch.int64)
    return x, y, n_bad
