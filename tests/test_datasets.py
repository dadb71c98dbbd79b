"""jpegfreq.datasets and jpegfreq.synthetic: layout, listing, labels, seeded generators."""
import hashlib
import os
import shutil

import numpy as np
import pytest

import jpegfreq
from jpegfreq.datasets import default_size, epoch_rng, list_samples, sample_rng
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
# the listing every reader shares
# ---------------------------------------------------------------------------

def test_list_samples_classes_labels_and_order(data):
    samples, classes = list_samples(os.path.join(data, "train"))
    assert classes == sorted(CLASSES[:4]) and len(samples) == 12
    assert [y for _, y in samples] == sorted(y for _, y in samples)     # class order
    for path, y in samples:
        assert os.path.basename(os.path.dirname(path)) == classes[y]
    assert [p for p, _ in samples] == sorted(p for p, _ in samples)
    # a fixed class list keeps its order and labels; a class without a folder has no samples
    fixed = [classes[2], "absent", classes[0]]
    got, cl = list_samples(os.path.join(data, "train"), fixed)
    assert cl == fixed and sorted({y for _, y in got}) == [0, 2]
    assert all(os.path.basename(os.path.dirname(p)) == fixed[y] for p, y in got)


@pytest.fixture
def odd(tmp_path, data):
    root = tmp_path / "odd"
    src = os.path.join(data, "train", CLASSES[0], "0000.jpg")
    (root / "a class" / "deeper").mkdir(parents=True)
    (root / "b").mkdir(parents=True)
    (root / ".hidden").mkdir()
    shutil.copy(src, root / "a class" / "it's a \"quoted\", name.JPG")
    shutil.copy(src, root / "a class" / "deeper" / "x y.jpeg")
    shutil.copy(src, root / ".hidden" / "h.jpg")
    from PIL import Image
    Image.open(src).convert("RGB").save(root / "b" / "z.png")
    (root / "b" / "notes.txt").write_text("not an image")
    return str(root)


def test_list_samples_odd_names_subfolders_other_formats(odd):
    samples, classes = list_samples(odd)
    assert classes == ["a class", "b"]
    names = [os.path.relpath(p, odd) for p, _ in samples]
    assert names == ["a class/deeper/x y.jpeg", "a class/it's a \"quoted\", name.JPG", "b/z.png"]
    assert [y for _, y in samples] == [0, 0, 1]


def test_loader_reads_other_formats_on_the_spatial_path_only(odd):
    from jpegfreq import JpegLoader
    with JpegLoader(odd, 3, "24S", SIZE, train=False, source="spatial", threads=1) as ld:
        (x, y), = list(ld)
        assert tuple(x.shape) == (3, 24, 16, 16) and y.tolist() == [0, 0, 1]
        assert ld.skipped == []
    with JpegLoader(odd, 3, "24S", SIZE, train=False, threads=1) as ld:
        (x, y), = list(ld)
        assert tuple(x.shape) == (2, 24, 16, 16) and y.tolist() == [0, 0]
        (path, reason), = ld.skipped                # the PNG: skipped, named, not replaced
        assert path.endswith("z.png") and reason


def test_missing_or_empty_folders_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such folder"):
        list_samples(str(tmp_path / "nothing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no class folders"):
        list_samples(str(tmp_path / "empty"))
    (tmp_path / "empty" / "c").mkdir()
    (tmp_path / "empty" / "c" / "notes.txt").write_text("x")
    with pytest.raises(FileNotFoundError, match="no images under"):
        list_samples(str(tmp_path / "empty"))


def test_sample_generators_are_per_seed_epoch_index():
    a = sample_rng(1, 2, 3).random(4)
    np.testing.assert_array_equal(a, sample_rng(1, 2, 3).random(4))
    for other in (sample_rng(0, 2, 3), sample_rng(1, 0, 3), sample_rng(1, 2, 4), epoch_rng(1, 2)):
        assert not np.array_equal(a, other.random(4))


def test_default_size():
    assert default_size("rgb") == 224 and default_size("jpeg-coeffs") == 448
    assert default_size("spatial", "mobilenetv2") == 896
