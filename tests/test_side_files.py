"""Side files read from disk are untrusted input: stats.json, heat maps, checkpoints.

Every malformed, truncated, misshapen or mismatched file raises ValueError (a checkpoint:
its subclass CheckpointError) naming the file and what is wrong; a checkpoint write that
fails raises OSError naming the file and leaves the previous checkpoint loadable.
"""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from jpegfreq import ChannelSet
from jpegfreq.heatmap import load_heatmap, plot_heatmap
from jpegfreq.stats import Stats

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _stats(spec="6S", source="jpeg-coeffs"):
    cs = None if source == "rgb" else ChannelSet.parse(spec)
    n = 3 if cs is None else cs.count
    return Stats(cs, np.arange(n, dtype=np.float64), np.ones(n), source, (64, 64), 10)


def _good_stats_text():
    return json.dumps(_stats().to_dict())


STATS_CASES = {
    "malformed": ("{not json", "malformed JSON"),
    "truncated": (_good_stats_text()[:40], "malformed JSON"),
    "empty": ("", "malformed JSON"),
    "list": ("[1, 2, 3]", "must be a JSON object, not list"),
    "number": ("3", "must be a JSON object, not int"),
    "no-mean": (json.dumps({"channels": "6S", "std": [1] * 6}), "'mean' is missing"),
    "short-mean": (json.dumps({"channels": "6S", "mean": [0] * 5, "std": [1] * 6}),
                   "'mean' holds 5 values for 6 channels"),
    "text-mean": (json.dumps({"channels": "6S", "mean": ["a"] * 6, "std": [1] * 6}),
                  "'mean' must be a list of numbers"),
    "nested-mean": (json.dumps({"channels": "6S", "mean": [[0]] * 6, "std": [1] * 6}),
                    "'mean' must be a list of numbers"),
    "nan-std": ('{"channels": "6S", "mean": [0,0,0,0,0,0], "std": [1,1,1,1,1,NaN]}',
                "'std' holds values that are not finite"),
    "huge-std": ('{"channels": "6S", "mean": [0,0,0,0,0,0], "std": [1,1,1,1,1,1e999]}',
                 "not finite"),
    "float32-std": (json.dumps({"channels": "6S", "mean": [0] * 6, "std": [1e93] * 6}),
                    "'std' holds values beyond the float32 range"),
    "folded-overflow": (json.dumps({"channels": "6S", "mean": [1e38] * 6, "std": [1e-5] * 6}),
                        "overflow float32"),
    "negative-std": (json.dumps({"channels": "6S", "mean": [0] * 6, "std": [-1] * 6}),
                     "negative"),
    "bad-channels": (json.dumps({"channels": "bogus", "mean": [0] * 6, "std": [1] * 6}),
                     "bogus"),
    "int-channels": (json.dumps({"channels": 24, "mean": [0] * 6, "std": [1] * 6}),
                     "spec string or null"),
    "bad-source": (json.dumps({"channels": "6S", "mean": [0] * 6, "std": [1] * 6,
                               "source": "jpeg"}), "'source' must be"),
    "bad-size": (json.dumps({"channels": "6S", "mean": [0] * 6, "std": [1] * 6,
                             "size": [64]}), "'size' must be two non-negative integers"),
    "bad-count": (json.dumps({"channels": "6S", "mean": [0] * 6, "std": [1] * 6,
                              "count": -3}), "'count'"),
    "bad-geometry": (json.dumps({"channels": "6S", "mean": [0] * 6, "std": [1] * 6,
                                 "geometry": [1, 2]}), "'geometry'"),
    "deep": ("[" * 100000 + "]" * 100000, "."),
}


@pytest.mark.parametrize("case", sorted(STATS_CASES))
def test_bad_stats_files_name_the_file_and_the_reason(tmp_path, case):
    text, reason = STATS_CASES[case]
    path = tmp_path / f"{case}.json"
    path.write_text(text)
    with pytest.raises(ValueError) as info:
        Stats.load(path)
    msg = str(info.value)
    assert msg.startswith(f"{path}: not a statistics file"), msg
    assert reason in msg, msg


def test_stats_file_that_is_not_utf8(tmp_path):
    path = tmp_path / "binary.json"
    path.write_bytes(b"\xff\xd8\xff\xe0" + bytes(64))
    with pytest.raises(ValueError, match=f"{path}: not a statistics file: not UTF-8"):
        Stats.load(path)


def test_stats_for_another_channel_set_or_source_are_refused(tmp_path):
    path = tmp_path / "stats.json"
    _stats("6S").save(path)
    st = Stats.load(path)
    assert st.check(ChannelSet.parse("6S"), geometry=None)[0].shape == (6,)
    with pytest.raises(ValueError, match="lack channels"):
        st.check(ChannelSet.parse("24S"))
    with pytest.raises(ValueError, match="cannot normalize 'rgb'"):
        st.check(None, source="rgb")
    with pytest.raises(FileNotFoundError):
        Stats.load(tmp_path / "missing.json")


# -- heat maps ---------------------------------------------------------------------

def _heat(freq=None, names=None):
    d = {"samples": 4, "frequency": [0.5] * 192 if freq is None else freq}
    if names is not None:
        d["channels"] = names
    return d


HEAT_CASES = {
    "malformed": ('{"frequency": [0.5, ', "malformed JSON"),
    "list": ("[0.5, 0.5]", "expected a JSON object, not list"),
    "no-frequency": (json.dumps({"samples": 1}), "'frequency' is missing"),
    "short": (json.dumps(_heat([0.5] * 191)), "192 channel names for 191 values"),
    "text-values": (json.dumps(_heat(["x"] * 192)), "must be a list of numbers"),
    "bad-name": (json.dumps(_heat([0.5], ["Q9"])), "bad channel name 'Q9'"),
    "names-not-list": (json.dumps(_heat([0.5], "Y0")), "'channels' must be a list"),
    "twice": (json.dumps(_heat([0.5, 0.5], ["Y0", "y0"])), "appears twice"),
    "out-of-range": (json.dumps(_heat([1.5], ["Y0"])), "outside 0..1"),
    "nan": ('{"channels": ["Y0"], "frequency": [NaN]}', "outside 0..1"),
}


@pytest.mark.parametrize("case", sorted(HEAT_CASES))
def test_bad_heat_maps_name_the_file_and_the_reason(tmp_path, case):
    text, reason = HEAT_CASES[case]
    path = tmp_path / f"{case}.json"
    path.write_text(text)
    for call in (load_heatmap, lambda p: plot_heatmap(p, str(tmp_path / "x.png"))):
        with pytest.raises(ValueError) as info:
            call(str(path))
        msg = str(info.value)
        assert msg.startswith(f"{path}: not a heat map"), msg
        assert reason in msg, msg


def test_good_heat_map_loads(tmp_path):
    path = tmp_path / "heat.json"
    path.write_text(json.dumps(_heat([0.25, 1.0], ["Y0", "Cr63"])))
    freq = load_heatmap(str(path))
    assert freq[0] == 0.25 and freq[191] == 1.0 and np.isnan(freq[1:191]).all()


# -- checkpoints ---------------------------------------------------------------------

torch = pytest.importorskip("torch")


def _ckpt(**change):
    from jpegfreq.geometry import eval_geometry
    ck = {"task": "classify", "model": {"w": torch.zeros(2)}, "arch": "resnet18",
          "num_classes": 3, "source": "jpeg-coeffs", "channels": "6S", "size": 64,
          "geometry": eval_geometry(64).to_dict(), "stats": _stats("6S").to_dict()}
    ck.update(change)
    return ck


CKPT_CASES = {
    "bad-channels": (dict(channels="Y:99"), "channels:"),
    "stats-other-set": (dict(channels="24S"), "stats: statistics computed for 6S lack channels"),
    "stats-rgb": (dict(stats=_stats(source="rgb").to_dict()), "stats:"),
    "stats-misshapen": (dict(stats={"channels": "6S", "mean": [0] * 2, "std": [1] * 6}),
                        "stats: 'mean' holds 2 values for 6 channels"),
    "stats-list": (dict(stats=[1, 2]), "stats: statistics must be a JSON object"),
    "size": (dict(size=-4), "size must be a positive int"),
    "geometry": (dict(geometry={"out_h": 7}), "geometry:"),
}


@pytest.mark.parametrize("case", sorted(CKPT_CASES))
def test_checkpoints_with_inconsistent_preprocessing_are_refused(tmp_path, case):
    from jpegfreq.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
    change, reason = CKPT_CASES[case]
    path = tmp_path / f"{case}.pth"
    with pytest.raises(CheckpointError, match="checkpoint for"):
        save_checkpoint(path, _ckpt(**change))       # refused before anything is written
    assert not path.exists()
    torch.save(_ckpt(**change), path)                 # written by something else
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    msg = str(info.value)
    assert msg.startswith(f"{path}: "), msg
    assert reason in msg, msg


def test_consistent_checkpoint_loads(tmp_path):
    from jpegfreq.checkpoint import load_checkpoint, save_checkpoint
    path = tmp_path / "ok.pth"
    save_checkpoint(path, _ckpt())
    assert load_checkpoint(path)["channels"] == "6S"


def test_checkpoint_write_over_the_file_size_limit_keeps_the_old_one(tmp_path):
    """RLIMIT_FSIZE in a child (SIGXFSZ ignored, so the write fails with EFBIG): OSError
    naming the file, no temporary file left, the previous checkpoint still loads."""
    path = tmp_path / "model.pth"
    child = textwrap.dedent(f"""
        import resource, signal, sys, torch
        sys.path.insert(0, {ROOT!r})
        from jpegfreq.checkpoint import save_checkpoint
        sys.path.insert(0, {os.path.join(ROOT, "tests")!r})
        from test_side_files import _ckpt
        save_checkpoint({str(path)!r}, _ckpt())               # the previous checkpoint
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))
        try:
            save_checkpoint({str(path)!r}, _ckpt(model={{"w": torch.zeros(100000)}}))
        except OSError as e:
            print("OSError", e)
        else:
            print("written")
    """)
    r = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    out = r.stdout.strip()
    assert out.startswith("OSError") and f"{path}: cannot write checkpoint" in out, out
    from jpegfreq.checkpoint import load_checkpoint
    back = load_checkpoint(path)
    assert back["model"]["w"].shape == (2,)
    assert sorted(os.listdir(tmp_path)) == ["model.pth"]
