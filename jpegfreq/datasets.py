"""What every data-set reader shares: the ImageFolder listing and the seeded generators.

    samples, classes = list_samples("data/train")      # [(path, label)], class names

Layout: FOLDER/CLASS/IMAGE, classes in sorted order, any extension in
jpegfreq.stats.IMAGE_EXTENSIONS (JPEGs take the compressed path; other images only
the spatial and rgb sources).  jpegfreq.JpegLoader reads such folders (and tar shards).

Reproducibility: a training sample's crop, flip and colour ops come from a numpy Generator
seeded by (seed, epoch, index), so they do not depend on the thread count, the thread a
sample lands on, or the order samples are drawn in.

Bad images: the loader skips an unreadable file and lists it (never substitutes another
sample: that would change the label distribution silently); train.py's --on-bad-image
error stops instead with a BadImageError naming the file.
"""
import os

import numpy as np

from .errors import JpegError
from .stats import IMAGE_EXTENSIONS, list_images

__all__ = ["list_samples", "BadImageError", "find_classes", "default_size", "sample_rng",
           "epoch_rng"]


#: last word of the (seed, epoch, .) generator seeds that are not a sample's own
_ORDER_KEY = 2 ** 64 - 1


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator of sample ``index`` in ``epoch``: its crop, flip and other per-sample
    ops (JpegLoader.draw), from a folder or shards, however many threads or processes read it."""
    return np.random.default_rng([int(seed), int(epoch), int(index)])


def epoch_rng(seed: int, epoch: int, key: int = _ORDER_KEY) -> np.random.Generator:
    """The generator of an epoch's order (sample permutation, shard order, shuffle buffer):
    distinct from every per-sample generator [seed, epoch, index] (sample_rng)."""
    return np.random.default_rng([int(seed), int(epoch), int(key)])


class BadImageError(JpegError):
    """An image of a data set could not be read (on_bad_image="error")."""

    def __init__(self, source, reason=None, kind="jpeg"):
        if reason is None:
            # rebuilt from its message alone (as exceptions are when re-raised across processes)
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


def list_samples(folder, classes=None):
    """The images of an ImageFolder split: (samples, classes).

    folder: FOLDER/CLASS/IMAGE (subfolders of a class are walked, links followed).
    classes: fix the class list and its order (default: the sorted class folders); a class
        without a folder has no samples.
    samples: [(path, label)] in class order, then sorted path order (jpegfreq.stats.list_images:
        files whose extension is not in IMAGE_EXTENSIONS are left out).  No images at all is
        a FileNotFoundError naming the folder.
    """
    folder = os.fspath(folder)
    classes = list(classes) if classes is not None else find_classes(folder)
    samples = [(path, label) for label, c in enumerate(classes)
               for path in list_images(os.path.join(folder, c))]
    if not samples:
        raise FileNotFoundError(f"no images under {folder}/CLASS/ "
                                f"(extensions: {' '.join(IMAGE_EXTENSIONS)})")
    return samples, classes
