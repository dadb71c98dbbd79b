"""jpegfreq.datasets and jpegfreq.synthetic: layout, labels, seeded geometry, bad images."""
import hashlib
import os
import shutil

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import jpegfreq
from jpegfreq.datasets import (BadImage, BadImageError, JpegFolder, collate_skip_bad,
                               default_size)
from jpegfreq.synthetic import CLASSES, make_dataset

SIZE = 128          # 16x16 cubes: every test here stays well under a second per image


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_dataset(str(tmp_path_factory.mktemp("syn") / "data"), classes=4,
                        train_per_class=3, val_per_class=2, seed=3, min_size=200, max_size=300)


def _digest(root):
    h = hashlib.sha256()
    for d, _, files in sorted(os.walk(root)):
        for f in sorted(files):
            if f.endswith(".jpg"):
                h.update(os.path.relpath(os.path.join(d, f), root).encode())
                with open(os.path.join(d, f), "rb") as fh:
                    h.update(fh.read())
    return h.hexdigest()


# ---------------------------------------------------------------------------
# synthetic
# ---------------------------------------------------------------------------

def test_make_dataset_layout(data):
    for split, n in (("train", 3), ("val", 2)):
        assert sorted(os.listdir(os.path.join(data, split))) == sorted(CLASSES[:4])
        for c in CLASSES[:4]:
            assert len(os.listdir(os.path.join(data, split, c))) == n
    for c in CLASSES[:4]:
        w, h = jpegfreq.read_header(os.path.join(data, "train", c, "0000.jpg")).width, \
            jpegfreq.read_header(os.path.join(data, "train", c, "0000.jpg")).height
        assert 200 <= w <= 300 and 200 <= h <= 300


def test_make_dataset_is_deterministic(tmp_path):
    a = make_dataset(str(tmp_path / "a"), classes=4, train_per_class=2, val_per_class=1,
                     seed=5, min_size=64, max_size=96)
    b = make_dataset(str(tmp_path / "b"), classes=4, train_per_class=2, val_per_class=1,
                     seed=5, min_size=64, max_size=96)
    c = make_dataset(str(tmp_path / "c"), classes=4, train_per_class=2, val_per_class=1,
                     seed=6, min_size=64, max_size=96)
    assert _digest(a) == _digest(b) != _digest(c)


def test_make_dataset_reuses_a_finished_set(tmp_path):
    root = make_dataset(str(tmp_path / "s"), classes=4, train_per_class=1, val_per_class=1,
                        min_size=64, max_size=80)
    victim = os.path.join(root, "train", CLASSES[0], "0000.jpg")
    os.remove(victim)
    make_dataset(root, classes=4, train_per_class=1, val_per_class=1, min_size=64, max_size=80)
    assert not os.path.exists(victim)            # same arguments: the manifest says done
    make_dataset(root, classes=4, train_per_class=1, val_per_class=1, min_size=64, max_size=81)
    assert os.path.exists(victim)                # other arguments: written again


def test_make_dataset_mixes_coding_modes(tmp_path):
    root = make_dataset(str(tmp_path / "m"), classes=10, train_per_class=6, val_per_class=0,
                        seed=0, min_size=48, max_size=64)
    headers = [jpegfreq.read_header(os.path.join(d, f))
               for d, _, fs in os.walk(root) for f in fs if f.endswith(".jpg")]
    assert len(headers) == 60
    kinds = {h.subsampling for h in headers if h.num_components == 3}
    assert {"4:4:4", "4:2:2", "4:2:0"} <= kinds
    assert any(h.progressive for h in headers) and not all(h.progressive for h in headers)
    assert any(h.num_components == 1 for h in headers)


def test_make_dataset_rejects_bad_class_counts(tmp_path):
    with pytest.raises(ValueError, match="classes must be between 4 and 10"):
        make_dataset(str(tmp_path / "x"), classes=3)


# ---------------------------------------------------------------------------
# JpegFolder
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("source,shape", [("jpeg-coeffs", (24, 16, 16)),
                                          ("spatial", (24, 16, 16)),
                                          ("rgb", (3, SIZE, SIZE))])
def test_items_are_tensors_and_labels(data, source, shape):
    ds = JpegFolder(data, "train", source, "24S", SIZE, train=True)
    assert ds.classes == sorted(CLASSES[:4]) and len(ds) == 12
    x, y = ds[4]
    assert isinstance(x, torch.Tensor) and x.dtype == torch.float32 and tuple(x.shape) == shape
    assert y == ds.class_to_idx[os.path.basename(os.path.dirname(ds.samples[4][0]))]


def test_default_sizes():
    assert default_size("rgb") == 224
    assert default_size("jpeg-coeffs") == 448
    assert default_size("spatial", "mobilenetv2") == 896


def test_float16_and_stats(data):
    ds = JpegFolder(data, "val", "jpeg-coeffs", "24S", SIZE, train=False, dtype="float16")
    assert ds[0][0].dtype == torch.float16
    from jpegfreq.stats import StatsAccumulator
    acc = StatsAccumulator(24)
    raw = JpegFolder(data, "val", "jpeg-coeffs", "24S", SIZE, train=False)
    for i in range(len(raw)):
        acc.update(raw[i][0].numpy())
    st = acc.result(jpegfreq.ChannelSet.parse("24S"), "jpeg-coeffs", (SIZE, SIZE))
    norm = JpegFolder(data, "val", "jpeg-coeffs", "24S", SIZE, train=False, stats=st)
    x = torch.stack([norm[i][0] for i in range(len(norm))])
    assert x.mean(dim=(0, 2, 3)).abs().max() < 1e-3
    assert (x.std(dim=(0, 2, 3)) - 1).abs().max() < 1e-2


def test_eval_uses_the_eval_geometry(data):
    ds = JpegFolder(data, "val", "jpeg-coeffs", "24S", SIZE, train=False)
    assert ds.geometry(0) == jpegfreq.eval_geometry(SIZE)
    ref = jpegfreq.cube(ds.samples[1][0], "24S", SIZE)
    np.testing.assert_array_equal(ds[1][0].numpy(), ref)


def test_train_geometry_depends_on_seed_epoch_index_only(data):
    a = JpegFolder(data, "train", "jpeg-coeffs", "24S", SIZE, train=True, seed=7)
    b = JpegFolder(data, "train", "jpeg-coeffs", "24S", SIZE, train=True, seed=7)
    geo = [a.geometry(i) for i in range(len(a))]
    assert [b.geometry(i) for i in reversed(range(len(b)))] == geo[::-1]
    assert len({g.box for g in geo}) == len(geo)            # a different crop per sample
    b.set_epoch(1)
    assert [b.geometry(i) for i in range(len(b))] != geo
    c = JpegFolder(data, "train", "jpeg-coeffs", "24S", SIZE, train=True, seed=8)
    assert [c.geometry(i) for i in range(len(c))] != geo
    # the geometry that __getitem__ uses is the one reported
    idx = 5
    ref = jpegfreq.cube(a.samples[idx][0], "24S", SIZE, geometry=geo[idx])
    np.testing.assert_array_equal(a[idx][0].numpy(), ref)


@pytest.mark.parametrize("workers", [0, 2])
def test_same_batches_whatever_the_worker_count(data, workers):
    ds = JpegFolder(data, "train", "jpeg-coeffs", "24S", SIZE, train=True, seed=1)
    ds.set_epoch(3)
    expected = torch.stack([ds[i][0] for i in range(len(ds))])
    loader = DataLoader(ds, batch_size=5, num_workers=workers, collate_fn=collate_skip_bad)
    got = torch.cat([x for x, _, _ in loader])
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_odd_file_names_and_other_formats(tmp_path, data):
    root = tmp_path / "odd"
    src = os.path.join(data, "train", CLASSES[0], "0000.jpg")
    (root / "train" / "a class").mkdir(parents=True)
    (root / "train" / "b").mkdir(parents=True)
    shutil.copy(src, root / "train" / "a class" / "it's a \"quoted\", name.JPG")
    shutil.copy(src, root / "train" / "b" / "x y.jpeg")
    from PIL import Image
    Image.open(src).convert("RGB").save(root / "train" / "b" / "z.png")
    (root / "train" / "b" / "notes.txt").write_text("not an image")
    ds = JpegFolder(str(root), "train", "spatial", "24S", SIZE, train=True)
    assert ds.classes == ["a class", "b"] and len(ds) == 3
    assert [y for _, y in ds.samples] == [0, 1, 1]
    for i in range(3):
        assert tuple(ds[i][0].shape) == (24, 16, 16)
    # the compressed path cannot read a PNG: with skipping on, that is a bad image
    coeffs = JpegFolder(str(root), "train", "jpeg-coeffs", "24S", SIZE, train=True)
    assert isinstance(coeffs[2], BadImage) and coeffs[2].path.endswith("z.png")
    assert tuple(coeffs[0][0].shape) == (24, 16, 16)


@pytest.fixture
def with_bad(tmp_path, data):
    root = tmp_path / "bad"
    shutil.copytree(data, root)
    folder = root / "train" / CLASSES[1]
    (folder / "garbage.jpg").write_bytes(b"this is not a JPEG at all" * 10)
    good = (folder / "0000.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(good[:120])       # ends inside the headers
    return str(root)


def test_bad_images_become_sentinels_that_collate_drops(with_bad):
    ds = JpegFolder(with_bad, "train", "jpeg-coeffs", "24S", SIZE, train=True)
    bad = [i for i, (p, _) in enumerate(ds.samples)
           if os.path.basename(p) in ("garbage.jpg", "truncated.jpg")]
    assert len(ds) == 14 and len(bad) == 2
    items = [ds[i] for i in range(len(ds))]
    assert all(isinstance(items[i], BadImage) for i in bad)
    assert all(not isinstance(it, BadImage) for i, it in enumerate(items) if i not in bad)
    x, y, n_bad = collate_skip_bad(items)
    assert n_bad == 2 and len(x) == len(y) == 12           # dropped, not replaced
    assert collate_skip_bad([items[i] for i in bad]) == (None, None, 2)
    loader = DataLoader(ds, batch_size=4, num_workers=1, collate_fn=collate_skip_bad)
    assert sum(b[2] for b in loader) == 2


def test_bad_image_error_names_the_file(with_bad):
    ds = JpegFolder(with_bad, "train", "jpeg-coeffs", "24S", SIZE, train=True,
                    on_bad_image="error")
    i = [os.path.basename(p) for p, _ in ds.samples].index("garbage.jpg")
    with pytest.raises(BadImageError, match=r"garbage\.jpg"):
        ds[i]
    loader = DataLoader(ds, batch_size=len(ds), num_workers=1, collate_fn=collate_skip_bad)
    with pytest.raises(BadImageError, match=r"garbage\.jpg|truncated\.jpg"):
        next(iter(loader))


def test_with_index_and_collate(data):
    ds = JpegFolder(data, "val", "jpeg-coeffs", "24S", SIZE, train=False, with_index=True)
    x, y, n_bad, idx = collate_skip_bad([ds[i] for i in (3, 1)])
    assert n_bad == 0 and idx.tolist() == [3, 1] and y.dtype == torch.int64


def test_missing_folder_and_bad_arguments(tmp_path, data):
    with pytest.raises(FileNotFoundError, match="no such folder"):
        JpegFolder(str(tmp_path / "nothing"), "train")
    with pytest.raises(ValueError, match="on_bad_image"):
        JpegFolder(data, "train", on_bad_image="ignore")
    with pytest.raises(ValueError, match="source"):
        JpegFolder(data, "train", source="dct")
