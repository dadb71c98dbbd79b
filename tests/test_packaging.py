"""The package as users install it: one top-level name, dependencies that run one way,
and a core that works without torch."""
import ast
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from jpeg_factory import make_jpeg

ROOT = Path(__file__).resolve().parent.parent


def _imported_modules(path: Path):
    """(line, absolute module name) of every import in a file, relative ones resolved."""
    tree = ast.parse(path.read_text(), str(path))
    package = "jpegfreq"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package if node.level == 1 else ""
                mod = ".".join(p for p in (base, node.module or "") if p)
            else:
                mod = node.module or ""
            yield node.lineno, mod
            for alias in node.names:  # "from jpegfreq import models", "from . import models"
                yield node.lineno, f"{mod}.{alias.name}"


def test_the_library_never_imports_the_networks():
    found = []
    for path in sorted((ROOT / "jpegfreq").glob("*.py")):
        for line, mod in _imported_modules(path):
            if mod == "models" or mod.startswith("models.") or mod == "jpegfreq.models" \
                    or mod.startswith("jpegfreq.models."):
                found.append(f"{path.name}:{line} imports {mod}")
    assert not found, found


def test_the_scanner_sees_the_imports_it_must_refuse(tmp_path):
    # the check above must not pass because it cannot see an import
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from . import models\n    import models.gate\n")
    mods = [m for _, m in _imported_modules(bad)]
    assert "jpegfreq.models" in mods and "models.gate" in mods


def test_core_works_without_torch():
    data = make_jpeg("baseline-420")
    code = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('torch', 'torchvision'):\n"
        "            raise ImportError('torch is absent in this test')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import jpegfreq\n"
        "data = sys.stdin.buffer.read()\n"
        "x = jpegfreq.cube(data, '24S')\n"
        "s = jpegfreq.cube(data, '24S', source='spatial')\n"
        "r = jpegfreq.read_coefficients(data)\n"
        "assert x.shape == (24, 56, 56) and s.shape == x.shape, (x.shape, s.shape)\n"
        "assert not any(m.split('.')[0] == 'torch' for m in sys.modules)\n"
        "print('ok', float(abs(x).sum()) > 0)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], input=data, capture_output=True,
                         cwd=str(ROOT), timeout=120)
    assert res.returncode == 0, res.stderr.decode()
    assert res.stdout.decode().split() == ["ok", "True"]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                          "--no-build-isolation", "-w", str(out), str(ROOT)],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    wheels = list(out.glob("jpegfreq-*.whl"))
    assert len(wheels) == 1, os.listdir(out)
    return wheels[0]


def test_wheel_has_one_top_level_package(wheel):
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
        info = [n for n in names if n.endswith(".dist-info/top_level.txt")]
        declared = z.read(info[0]).decode().split() if info else ["jpegfreq"]
    assert top == {"jpegfreq"}, top
    assert declared == ["jpegfreq"], declared
    # the networks of models/ ship under the jpegfreq namespace
    assert "jpegfreq/models/__init__.py" in names and "jpegfreq/models/resnet_dct.py" in names
    assert any(n.startswith("jpegfreq/_jpegfreq") and n.endswith(".so") for n in names)
