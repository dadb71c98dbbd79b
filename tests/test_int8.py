"""int8 input: JpegLoader(dtype="int8") batches turned back into float at the networks' input
with the step they were built with, kept in the state dict through a checkpoint."""
import pytest
import torch

from jpegfreq.checkpoint import save_checkpoint
from jpegfreq.models import build_model, load_model
from jpegfreq.models.resnet_dct import resnet18_dct

pytestmark = pytest.mark.usefixtures("torch_one_thread")

C = 24
ARCHS = [("resnet18", False, 8), ("mobilenetv2", False, 16), ("resnet18", True, 8)]


def _int8_batch(side, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(-127, 128, (2, C, side, side), generator=g, dtype=torch.int8)


def _step():
    return torch.linspace(0.01, 0.1, C)


@pytest.mark.parametrize("arch,gate,side", ARCHS)
def test_int8_input_equals_its_dequantized_float_and_round_trips(arch, gate, side, tmp_path):
    torch.manual_seed(0)
    net = build_model(arch, "jpeg-coeffs", "24S", 5, gate=gate, int8_scale=_step()).eval()
    assert torch.equal(net.state_dict()["int8_scale"], _step())
    x8 = _int8_batch(side)
    xf = x8.float() * _step()[None, :, None, None]
    with torch.no_grad():
        a, b = net(x8), net(xf)              # int8 dequantized; float used as it is
    if gate:
        a, b = a[0], b[0]
    assert torch.allclose(a, b, atol=1e-5)
    path = tmp_path / "int8.pth"
    save_checkpoint(path, {"model": net.state_dict(), "arch": arch, "num_classes": 5,
                           "source": "jpeg-coeffs", "channels": "24S", "gate": gate})
    again = load_model(path)
    assert torch.equal(again.int8_scale, _step())
    with torch.no_grad():
        c = again(x8)
    assert torch.allclose(c[0] if gate else c, a, atol=1e-5)
    meta = load_model(path, device="meta")          # shapes only, the buffer included
    assert meta.int8_scale.is_meta and meta.int8_scale.shape == (C,)


def test_int8_input_needs_the_step_and_float_models_are_unchanged(tmp_path):
    torch.manual_seed(0)
    plain = build_model("resnet18", "jpeg-coeffs", "24S", 5).eval()
    assert plain.int8_scale is None and "int8_scale" not in plain.state_dict()
    with pytest.raises(ValueError, match="int8_scale"):
        plain(_int8_batch(8))
    path = tmp_path / "float.pth"
    save_checkpoint(path, {"model": plain.state_dict(), "arch": "resnet18", "num_classes": 5,
                           "source": "jpeg-coeffs", "channels": "24S"})
    assert load_model(path).int8_scale is None
    with pytest.raises(ValueError, match="24 input channels"):
        resnet18_dct(24, 5, int8_scale=torch.ones(23))
    with pytest.raises(ValueError, match="positive"):
        resnet18_dct(24, 5, int8_scale=torch.zeros(24))
    net = resnet18_dct(24, 5, int8_scale=_step()).eval()
    with pytest.raises(ValueError, match=r"\(N, 24, H, W\)"):
        net(torch.zeros(2, 23, 8, 8, dtype=torch.int8))


def test_loader_int8_batches_feed_a_network_built_with_its_step(tmp_path):
    import numpy as np
    import jpegfreq
    from jpegfreq.loader import JpegLoader
    from jpegfreq.stats import Stats
    from jpeg_factory import make_jpeg
    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        for i in range(3):
            (tmp_path / c / f"{i}.jpg").write_bytes(make_jpeg("baseline-420", 96, 80, seed=i))
    raw, _ = next(iter(JpegLoader(str(tmp_path), 6, size=64, train=False, threads=1)))
    st = Stats(jpegfreq.ChannelSet.parse("24S"), raw.double().mean((0, 2, 3)).numpy(),
               raw.double().std((0, 2, 3)).numpy(), "jpeg-coeffs", (64, 64), 1)
    ld = JpegLoader(str(tmp_path), 6, size=64, train=False, threads=1, dtype="int8", stats=st)
    ref = JpegLoader(str(tmp_path), 6, size=64, train=False, threads=1, stats=st)
    (x8, _), (xf, _) = next(iter(ld)), next(iter(ref))
    assert x8.dtype == torch.int8
    back = x8.float() * ld.int8_scale[None, :, None, None]
    assert float((back - xf).pow(2).mean().sqrt()) < 0.5 * float(ld.int8_scale[0])
    torch.manual_seed(0)
    net = build_model("resnet18", "jpeg-coeffs", "24S", 2, int8_scale=ld.int8_scale).eval()
    with torch.no_grad():
        a, b = net(x8), net(xf)
    assert torch.allclose(a, b, rtol=0.05, atol=0.05 * float(b.abs().max()))
