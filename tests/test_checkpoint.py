"""Checkpoints: tensors and plain data only, read with weights_only=True everywhere.

A checkpoint whose pickle would run a command is refused by every reader (load_model,
Decoder.from_checkpoint, train.py --evaluate/--resume, detect.py --evaluate/--resume) with an
error naming the file, and the command never runs. save_checkpoint refuses non-plain data;
load_checkpoint names the file and the reason for missing, empty, foreign and truncated files.
"""
import argparse
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from jpegfreq import ChannelSet  # noqa: E402
from jpegfreq.checkpoint import (  # noqa: E402
    check_plain,
    load_checkpoint,
    preprocessing,
    read_torch_file,
    save_checkpoint,
)
from jpegfreq.geometry import eval_geometry  # noqa: E402
from jpegfreq.models import build_model, load_model  # noqa: E402
from jpegfreq.models.detection import build_detector  # noqa: E402
from jpegfreq.serving import Decoder  # noqa: E402
from jpegfreq.stats import Stats  # noqa: E402
from pickles import pickled_globals  # noqa: E402

pytestmark = pytest.mark.usefixtures("torch_one_thread")

UNSAFE = "cannot be loaded safely"


class RunsCommand:
    """Pickles as a call to os.system: unpickling it runs the command."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def classifier_ckpt(arch="resnet18", source="jpeg-coeffs", channels="24S", num_classes=3,
                    gate=False):
    torch.manual_seed(0)
    net = build_model(arch, source, None if source == "rgb" else ChannelSet.parse(channels),
                      num_classes, gate=gate)
    return net, {
        "task": "classify", "model": net.state_dict(), "arch": arch,
        "num_classes": num_classes, "classes": [f"c{i}" for i in range(num_classes)],
        "source": source, "channels": None if source == "rgb" else channels, "size": 224,
        "geometry": eval_geometry(224).to_dict(), "stats": None, "gate": gate, "epoch": 0,
        "best_acc1": 0.0, "args": {"arch": arch, "lr": 0.1, "steps": [1, 2]},
    }


def malicious(path, marker):
    """A checkpoint with every schema field whose pickle touches `marker` when unpickled."""
    _, ckpt = classifier_ckpt()
    ckpt["args"] = RunsCommand(f"touch {marker}")
    torch.save(ckpt, path)          # torch.save itself pickles anything; that is the point
    return str(path)


@pytest.fixture
def evil(tmp_path):
    marker = tmp_path / "MARKER"
    return malicious(tmp_path / "evil.pth", marker), marker


def test_the_payload_is_live(tmp_path):
    # control, without running it: the file's pickle calls os.system when unpickled
    marker = tmp_path / "CONTROL"
    path = malicious(tmp_path / "control.pth", marker)
    assert f"{os.system.__module__} system" in pickled_globals(path)
    assert not marker.exists()


def test_load_checkpoint_and_load_model_refuse_code(evil):
    path, marker = evil
    for load in (load_checkpoint, load_model, read_torch_file,
                 lambda p: load_model(p, device="meta")):
        with pytest.raises(ValueError, match=UNSAFE) as info:
            load(path)
        assert path in str(info.value) and "posix.system" in str(info.value)
    assert not marker.exists()


def test_decoder_from_checkpoint_refuses_code(evil):
    path, marker = evil
    with pytest.raises(ValueError, match=UNSAFE):
        Decoder.from_checkpoint(path)
    assert not marker.exists()


def test_backbone_weights_refuse_code(evil):
    path, marker = evil
    with pytest.raises(ValueError, match=UNSAFE):
        build_detector("bbox", "jpeg-coeffs", "24S", 3, backbone_weights=path)
    assert not marker.exists()


def test_old_checkpoint_with_pickled_objects_is_refused_with_a_reason(tmp_path):
    # what train.py wrote before checkpoints were plain: an argparse.Namespace inside
    _, ckpt = classifier_ckpt()
    ckpt["args"] = argparse.Namespace(arch="resnet18", lr=0.1)
    path = str(tmp_path / "old.pth")
    torch.save(ckpt, path)
    with pytest.raises(ValueError, match="older jpegfreq") as info:
        load_checkpoint(path)
    assert "argparse.Namespace" in str(info.value) and path in str(info.value)


def _run(script, *argv):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, os.path.join(ROOT, script), *argv], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=240)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    from jpegfreq.synthetic import make_dataset
    return make_dataset(str(tmp_path_factory.mktemp("cls") / "data"), classes=4,
                        train_per_class=1, val_per_class=1, seed=3, min_size=64, max_size=96)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    from jpegfreq.synthetic import make_shapes_dataset
    root = str(tmp_path_factory.mktemp("det"))
    return root, make_shapes_dataset(root, 2, "train", seed=1, size=(96, 80))


def _assert_refused(result, path, marker):
    assert result.returncode != 0
    text = result.stdout + result.stderr
    assert path in text and UNSAFE in text, text[-2000:]
    # one line naming the file and the reason, not a traceback
    assert "Traceback" not in text and ": error: " in result.stderr, text[-2000:]
    assert not marker.exists()


def test_train_script_refuses_code(evil, folder, tmp_path):
    path, marker = evil
    _assert_refused(_run("train.py", "--data", folder, "--evaluate", path, "--threads", "1",
                         "--no-progress"), path, marker)
    _assert_refused(_run("train.py", "--data", folder, "--resume", path, "--arch", "resnet18",
                         "--size", "64", "--epochs", "1", "--threads", "1", "--no-progress",
                         "--output-dir", str(tmp_path / "out")), path, marker)


def test_detect_script_refuses_code(evil, shapes, tmp_path):
    path, marker = evil
    root, ann = shapes
    data = ["--data", os.path.join(root, "train"), "--ann", ann, "--val-ann", ann,
            "--workers", "0", "--device", "cpu", "--no-progress"]
    _assert_refused(_run("detect.py", *data, "--evaluate", path), path, marker)
    _assert_refused(_run("detect.py", *data, "--resume", path, "--epochs", "1",
                         "--output-dir", str(tmp_path / "out")), path, marker)


# ---------------------------------------------------------------------------
# save_checkpoint: plain data only, schema checked, nothing written otherwise


@pytest.mark.parametrize("value, where, kind", [
    (np.zeros(3), "['stats']['mean']", "numpy.ndarray"),
    (np.float64(0.5), "['stats']['mean']", "numpy.float64"),
    (argparse.Namespace(a=1), "['stats']['mean']", "argparse.Namespace"),
    ({1.5: "x"}, "['stats']['mean']", "key 1.5"),
])
def test_save_refuses_non_plain_values_naming_the_key(tmp_path, value, where, kind):
    _, ckpt = classifier_ckpt()
    ckpt["stats"] = {"mean": value}
    path = tmp_path / "c.pth"
    with pytest.raises(ValueError, match="not") as info:
        save_checkpoint(path, ckpt)
    assert f"checkpoint{where}" in str(info.value) and kind in str(info.value)
    assert os.listdir(tmp_path) == []     # neither the file nor a temporary one


def test_save_refuses_objects_and_cycles(tmp_path):
    _, ckpt = classifier_ckpt()
    stats = Stats(ChannelSet.parse("24S"), np.zeros(24), np.ones(24))
    with pytest.raises(ValueError, match=r"checkpoint\['stats'\]: jpegfreq.stats.Stats"):
        save_checkpoint(tmp_path / "a.pth", dict(ckpt, stats=stats))
    with pytest.raises(ValueError, match=r"checkpoint\['history'\]\[1\]: .*Namespace"):
        save_checkpoint(tmp_path / "b.pth", dict(ckpt, history=[1, argparse.Namespace()]))
    loop = []
    loop.append(loop)
    with pytest.raises(ValueError, match="cycle"):
        save_checkpoint(tmp_path / "c.pth", dict(ckpt, history=loop))
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("change, message", [
    ({"arch": None}, "lacks the required key"),
    ({"channels": None}, "'channels'"),
    ({"task": "bbox"}, "task 'bbox'"),
    ({"num_classes": 0}, "num_classes"),
    ({"source": "png"}, "source 'png'"),
])
def test_save_refuses_checkpoints_outside_the_schema(tmp_path, change, message):
    _, ckpt = classifier_ckpt()
    for k, v in change.items():
        if v is None:
            del ckpt[k]
        else:
            ckpt[k] = v
    with pytest.raises(ValueError, match=message):
        save_checkpoint(tmp_path / "c.pth", ckpt)
    assert os.listdir(tmp_path) == []


def test_plain_checkpoint_round_trips_under_weights_only(tmp_path):
    net, ckpt = classifier_ckpt()
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    net(torch.randn(2, 24, 16, 16)).sum().backward()
    opt.step()
    ckpt["optimizer"] = opt.state_dict()
    path = tmp_path / "c.pth"
    save_checkpoint(path, ckpt)
    back = torch.load(path, weights_only=True)     # what every reader does
    assert back["args"] == ckpt["args"] and back["classes"] == ckpt["classes"]
    assert torch.equal(back["optimizer"]["state"][0]["momentum_buffer"],
                       opt.state_dict()["state"][0]["momentum_buffer"])
    assert load_checkpoint(str(path))["arch"] == "resnet18"
    assert os.listdir(tmp_path) == ["c.pth"]


def test_check_plain_accepts_state_dicts_and_scalars():
    check_plain({"model": build_model("resnet18", "rgb", None, 2).state_dict(),
                 "x": [1, 2.0, "s", None, True, (3, 4)], 7: {"y": torch.zeros(2)}})


# ---------------------------------------------------------------------------
# load_checkpoint: every bad file is a ValueError naming the file and the reason


def test_bad_files_name_the_file_and_the_reason(tmp_path):
    _, ckpt = classifier_ckpt()
    good = tmp_path / "good.pth"
    save_checkpoint(good, ckpt)
    data = good.read_bytes()
    cases = {
        "missing.pth": (None, "cannot read"),
        "empty.pth": (b"", "empty"),
        "text.pth": (b"hello, world\n", "not a file written by torch.save"),
        "image.pth": (b"\xff\xd8\xff\xe0" + bytes(200), "not a file written by torch.save"),
        "truncated.pth": (data[: len(data) // 2], "truncated or corrupt"),
        "head.pth": (data[:64], "truncated or corrupt"),
        "tail-cut.pth": (data[:-30], "truncated or corrupt"),
    }
    for name, (content, reason) in cases.items():
        path = tmp_path / name
        if content is not None:
            path.write_bytes(content)
        for load in (load_checkpoint, load_model):
            with pytest.raises(ValueError, match=reason) as info:
                load(str(path))
            assert str(path) in str(info.value), name
    with pytest.raises(ValueError, match="cannot read"):
        load_checkpoint(str(tmp_path))              # a directory


def test_torch_files_that_are_not_checkpoints(tmp_path):
    path = tmp_path / "list.pth"
    torch.save([1, 2, 3], path)
    with pytest.raises(ValueError, match="holds a list, expected a dict"):
        load_checkpoint(path)
    path = tmp_path / "state.pth"
    torch.save(build_model("resnet18", "rgb", None, 2).state_dict(), path)
    with pytest.raises(ValueError, match=r"lacks the required key\(s\) 'model', 'arch'"):
        load_model(path)


# ---------------------------------------------------------------------------
# load_model: classifiers and detectors from one schema, on the device asked for


@pytest.mark.parametrize("arch, source, gate", [("resnet18", "jpeg-coeffs", False),
                                                ("mobilenetv2", "rgb", False),
                                                ("resnet18", "spatial", True)])
def test_load_model_classifier(tmp_path, arch, source, gate):
    net, ckpt = classifier_ckpt(arch, source, "24S" if not gate else "192", gate=gate)
    path = tmp_path / "c.pth"
    save_checkpoint(path, ckpt)
    model = load_model(str(path))
    assert not model.training
    side = 64 if source == "rgb" else 16
    x = torch.randn(2, 3 if source == "rgb" else (192 if gate else 24), side, side)
    with torch.no_grad():
        got, want = model(x), net.eval()(x)
    if gate:
        got, want = got[0], want[0]
    assert torch.equal(got, want)
    meta = load_model(path, device="meta")
    assert {p.device.type for p in meta.parameters()} == {"meta"}
    assert {b.device.type for b in meta.buffers()} == {"meta"}
    assert not meta.training
    assert next(load_model(ckpt, map_location="meta").parameters()).is_meta


def test_load_model_strips_ddp_prefix_and_names_a_mismatch(tmp_path):
    net, ckpt = classifier_ckpt()
    ckpt["model"] = {f"module.{k}": v for k, v in ckpt["model"].items()}
    assert torch.equal(load_model(ckpt).fc.weight, net.fc.weight)
    ckpt["channels"] = "64S"          # the weights are for 24 channels
    path = tmp_path / "c.pth"
    save_checkpoint(path, ckpt)
    with pytest.raises(ValueError, match=r"c\.pth: its state dict does not fit resnet18"):
        load_model(str(path))


@pytest.mark.parametrize("arch, source", [("maskrcnn_resnet50_dct_fpn", "jpeg-coeffs"),
                                          ("fasterrcnn_resnet50_fpn_rgb", "rgb")])
def test_load_model_detector(tmp_path, arch, source):
    kind = "segm" if arch.startswith("mask") else "bbox"
    kwargs = {"box_detections_per_img": 17}
    if source != "rgb":
        kwargs["frozen_bn"] = True
    torch.manual_seed(0)
    net = build_detector(kind, source, "24S", 4, **kwargs).eval()
    ckpt = {"task": "detect", "arch": arch, "model": net.state_dict(), "num_classes": 4,
            "source": source, "channels": None if source == "rgb" else "24S",
            "model_kwargs": kwargs, "min_size": 64, "max_size": 96, "cat_ids": [1, 2, 3],
            "classes": ["a", "b", "c"]}
    path = tmp_path / "d.pth"
    save_checkpoint(path, ckpt)
    model = load_model(str(path))
    assert type(model) is type(net) and not model.training
    assert model.roi_heads.detections_per_img == 17
    if source != "rgb":
        assert type(model.backbone.body["layer2"][0].bn1).__name__ == "FrozenBatchNorm2d"
        x = [torch.randn(24, 16, 24)]
    else:
        x = [torch.rand(3, 64, 96)]
    with torch.no_grad():
        a, b = model(x)[0], net(x)[0]
    assert torch.equal(a["boxes"], b["boxes"]) and torch.equal(a["scores"], b["scores"])
    pre = preprocessing(load_checkpoint(path))
    assert pre["task"] == "detect" and (pre["min_size"], pre["max_size"]) == (64, 96)
    meta = load_model(path, device="meta")
    assert {p.device.type for p in meta.parameters()} == {"meta"}
    # the arch names the input: an RGB detector arch on cubes is refused
    bad = dict(ckpt, arch="maskrcnn_resnet50_fpn_rgb" if source != "rgb"
               else "maskrcnn_resnet50_dct_fpn")
    with pytest.raises(ValueError, match="does not take source"):
        load_model(bad)
