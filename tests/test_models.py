"""models/: shapes, stage sizes vs RGB, parameter identities, the gate, RGB-weight loading."""

import json
import os
import sys
from types import SimpleNamespace

import pytest
import torch
from torch import nn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from jpegfreq import models  # noqa: E402
from jpegfreq.models import (  # noqa: E402
    ChannelGate,
    GatedModel,
    HeatmapAccumulator,
    accumulate_heatmap,
    gate_loss,
    load_rgb_weights,
)

NUM_CLASSES = 10

# builder name -> (DCT cube side, RGB builder)
DCT = {
    "resnet50_dct": (56, models.resnet50),
    "resnet18_dct": (56, models.resnet18),
    "mobilenet_v2_dct": (112, models.mobilenet_v2),
}


def n_params(module):
    return sum(p.numel() for p in module.parameters())


def build(name, channels=24, **kw):
    torch.manual_seed(0)
    return getattr(models, name)(channels, num_classes=NUM_CLASSES, **kw).eval()


# ---------------------------------------------------------------------------------------------
# Shapes


@pytest.mark.parametrize("name", list(DCT))
@pytest.mark.parametrize("channels", [1, 24, 192])
def test_dct_output_shape(name, channels):
    side = DCT[name][0]
    model = build(name, channels)
    with torch.no_grad():
        out = model(torch.randn(2, channels, side, side))
    assert out.shape == (2, NUM_CLASSES)
    assert model.in_channels == channels


@pytest.mark.parametrize("name", ["resnet50", "resnet18", "mobilenet_v2"])
def test_rgb_output_shape(name):
    model = getattr(models, name)(num_classes=NUM_CLASSES).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 224, 224)).shape == (1, NUM_CLASSES)


def _stage_shapes(model, x, names):
    shapes = {}
    modules = dict(model.named_modules())
    handles = [
        modules[n].register_forward_hook(
            lambda m, i, o, n=n: shapes.__setitem__(n, tuple(o.shape))
        )
        for n in names
    ]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return shapes


@pytest.mark.parametrize("name", list(DCT))
@pytest.mark.parametrize("channels", [24, 64])
def test_stage_sizes_match_rgb_at_224(name, channels):
    side, rgb_builder = DCT[name]
    dct = build(name, channels)
    rgb = rgb_builder(num_classes=NUM_CLASSES).eval()
    if name.startswith("resnet"):
        stages = ["layer1", "layer2", "layer3", "layer4"]
    else:  # every block of MobileNetV2 after the stem, features.1 .. features.18
        stages = [f"features.{i}" for i in range(1, 19)]
    got = _stage_shapes(dct, torch.randn(1, channels, side, side), stages)
    want = _stage_shapes(rgb, torch.randn(1, 3, 224, 224), stages)
    assert len(want) == len(stages)
    assert got == want


def test_stem_is_gone():
    names = {n for n, _ in models.resnet50_dct(24).named_modules()}
    assert not names & {"conv1", "bn1", "relu", "maxpool"}
    assert "features.0" not in {n for n, _ in models.mobilenet_v2_dct(24).named_modules()}
    assert models.mobilenet_v2_dct(24).features[0].conv[0][0].groups == 24


# ---------------------------------------------------------------------------------------------
# Parameter counts: DCT = RGB - stem + growth of the first block, from layer shapes alone


def _bn(c):
    return 2 * c


RESNET_STEM = 64 * 3 * 7 * 7 + _bn(64)


def _resnet50_first_block_growth(c):
    # layer1.0.conv1: 1x1 c->64 instead of 64->64; downsample.0: 1x1 c->256 instead of 64->256
    return (c - 64) * 64 + (c - 64) * 256


def _resnet18_first_block_growth(c):
    # layer1.0.conv1: 3x3 c->64 instead of 64->64; the RGB block has an identity shortcut,
    # the DCT block gains a 1x1 c->64 projection + BN unless c == 64
    projection = c * 64 + _bn(64) if c != 64 else 0
    return (c - 64) * 64 * 9 + projection


def _mobilenet_v2_stem(width):
    return width * 3 * 3 * 3 + _bn(width)


def _mobilenet_v2_first_block_growth(c, rgb_in, out):
    # features.1 (t=1): depthwise 3x3 + BN on c channels instead of rgb_in, projection c->out
    return (c - rgb_in) * 9 + _bn(c) - _bn(rgb_in) + (c - rgb_in) * out


@pytest.mark.parametrize("channels", [1, 6, 24, 64, 192])
def test_param_identity_resnet50(channels):
    delta = n_params(models.resnet50_dct(channels, 10)) - n_params(models.resnet50(10))
    assert delta == -RESNET_STEM + _resnet50_first_block_growth(channels)


@pytest.mark.parametrize("channels", [1, 24, 64, 192])
def test_param_identity_resnet18(channels):
    delta = n_params(models.resnet18_dct(channels, 10)) - n_params(models.resnet18(10))
    assert delta == -RESNET_STEM + _resnet18_first_block_growth(channels)


@pytest.mark.parametrize("channels", [1, 6, 24, 64, 192])
@pytest.mark.parametrize("width_mult, rgb_in, out", [(1.0, 32, 16), (0.5, 16, 8)])
def test_param_identity_mobilenet_v2(channels, width_mult, rgb_in, out):
    dct = models.mobilenet_v2_dct(channels, 10, width_mult=width_mult)
    rgb = models.mobilenet_v2(10, width_mult=width_mult)
    delta = n_params(dct) - n_params(rgb)
    assert delta == -_mobilenet_v2_stem(rgb_in) + _mobilenet_v2_first_block_growth(
        channels, rgb_in, out
    )


def test_rgb_param_counts_match_published():
    # torchvision's model cards: 25,557,032 / 11,689,512 / 3,504,872
    assert n_params(models.resnet50()) == 25_557_032
    assert n_params(models.resnet18()) == 11_689_512
    assert n_params(models.mobilenet_v2()) == 3_504_872


# ---------------------------------------------------------------------------------------------
# Configuration


def test_channel_set_like():
    names = [f"Y{k}" for k in range(16)] + ["Cb0", "Cb1", "Cb8", "Cb9", "Cr0", "Cr1", "Cr8", "Cr9"]
    cs = SimpleNamespace(count=24, names=names)
    model = models.resnet50_dct(cs, num_classes=NUM_CLASSES)
    assert model.in_channels == 24 and model.channel_names == names
    assert models.mobilenet_v2_dct(cs, num_classes=NUM_CLASSES).in_channels == 24


def test_channel_set_name_goes_through_jpegfreq(monkeypatch):
    parsed = []

    class FakeChannelSet:
        @staticmethod
        def parse(spec):
            parsed.append(spec)
            return SimpleNamespace(count=6, names=["Y0", "Y1", "Y8", "Y9", "Cb0", "Cr0"])

    monkeypatch.setitem(sys.modules, "jpegfreq", SimpleNamespace(ChannelSet=FakeChannelSet))
    model = models.mobilenet_v2_dct("6S", num_classes=NUM_CLASSES)
    assert parsed == ["6S"] and model.in_channels == 6 and model.channel_names[-1] == "Cr0"


@pytest.mark.parametrize("channels", [0, -3, 2.5, True, None, SimpleNamespace(count=0)])
@pytest.mark.parametrize("name", list(DCT))
def test_bad_channels_raise(name, channels):
    with pytest.raises(ValueError, match="channels"):
        getattr(models, name)(channels)


def test_bad_configs_raise():
    with pytest.raises(ValueError, match="num_classes"):
        models.resnet50_dct(24, num_classes=0)
    with pytest.raises(ValueError, match="width_mult"):
        models.mobilenet_v2_dct(24, width_mult=0)
    with pytest.raises(ValueError, match="stage depths"):
        models.ResNet(models.Bottleneck, [3, 4, 6], in_channels=24, stem=False)
    with pytest.raises(ValueError, match="blocks per stage"):
        models.ResNet(models.BasicBlock, [2, 0, 2, 2])
    with pytest.raises(ValueError, match="block must be"):
        models.ResNet(nn.Conv2d, [2, 2, 2, 2])
    with pytest.raises(ValueError, match="count=3 but 2 names"):
        models.resnet18_dct(SimpleNamespace(count=3, names=["Y0", "Y1"]))
    with pytest.raises(ValueError, match=r"expected input \(N, 24, H, W\)"):
        models.resnet18_dct(24)(torch.zeros(1, 3, 56, 56))
    with pytest.raises(ValueError, match="multiple of num_channels"):
        ChannelGate(192, hidden=100)
    with pytest.raises(ValueError, match="tau"):
        ChannelGate(tau=0)
    with pytest.raises(ValueError, match="eval_mode"):
        ChannelGate(eval_mode="soft")
    with pytest.raises(ValueError, match="backbone takes 24 channels"):
        GatedModel(ChannelGate(192), models.resnet18_dct(24))
    with pytest.raises(ValueError, match="first_block"):
        load_rgb_weights(models.resnet18_dct(24), {}, first_block="copy")


@pytest.mark.parametrize("name", list(DCT))
def test_deterministic_under_seed(name):
    side = DCT[name][0]
    outs = []
    for _ in range(2):
        torch.manual_seed(123)
        model = getattr(models, name)(24, num_classes=NUM_CLASSES).eval()
        with torch.no_grad():
            outs.append(model(torch.randn(2, 24, side, side)))
    assert torch.equal(outs[0], outs[1])


# ---------------------------------------------------------------------------------------------
# Gate


def _gated(num_channels=192):
    return GatedModel(ChannelGate(num_channels), models.resnet18_dct(num_channels, NUM_CLASSES))


def test_gate_shapes_and_open_at_init():
    torch.manual_seed(0)
    gate = ChannelGate()
    x = torch.randn(4, 192, 8, 8)
    gated, gates = gate(x)
    assert gated.shape == x.shape and gates.shape == (4, 192)
    assert set(gates.unique().tolist()) <= {0.0, 1.0}
    # sampling: open with probability sigmoid(5) ~ 0.993 per draw
    assert gates.mean().item() > 0.97
    gate.eval()
    gated, gates = gate(x)
    assert torch.equal(gates, torch.ones(4, 192)) and torch.equal(gated, x)


def test_gradients_reach_gate_logits():
    torch.manual_seed(0)
    model = _gated().train()
    x, y = torch.randn(2, 192, 56, 56), torch.tensor([1, 3])
    logits, gates = model(x)
    loss = nn.functional.cross_entropy(logits, y) + 0.1 * gate_loss(gates)
    loss.backward()
    grad = model.gate.logits.weight.grad
    assert grad is not None and grad.abs().sum() > 0
    assert model.gate.logits.bias.grad.abs().sum() > 0
    assert model.gate.conv.weight.grad.abs().sum() > 0


def test_regulariser_alone_pushes_gates_closed():
    torch.manual_seed(0)
    gate = ChannelGate(16)
    gate_loss(gate(torch.randn(3, 16, 4, 4))[1]).backward()
    bias_grad = gate.logits.bias.grad.view(16, 2)
    # descending the loss raises "closed" and lowers "open" logits
    assert (bias_grad[:, 1] >= 0).all() and (bias_grad[:, 0] <= 0).all()
    assert bias_grad.abs().sum() > 0


def test_regulariser_is_fraction_open():
    torch.manual_seed(0)
    gate = ChannelGate(32)
    with torch.no_grad():
        gate.logits.bias.zero_()  # p_open = 0.5: a mix of open and closed
    _, gates = gate(torch.randn(8, 32, 4, 4))
    open_count = int((gates == 1).sum())
    assert 0 < open_count < gates.numel()
    assert int((gates == 0).sum()) + open_count == gates.numel()
    assert gate_loss(gates).item() == pytest.approx(open_count / gates.numel(), abs=1e-7)
    assert gate_loss(gates).requires_grad


def test_gate_multiplies_channels():
    torch.manual_seed(0)
    gate = ChannelGate(32)
    with torch.no_grad():
        gate.logits.bias.zero_()
    x = torch.randn(2, 32, 4, 4)
    gated, gates = gate(x)
    assert torch.equal(gated, x * gates[:, :, None, None])
    assert (gated[gates == 0] == 0).all()


def test_gate_temperature_and_eval_modes():
    gate = ChannelGate(16, tau=1.0)
    with torch.no_grad():
        gate.logits.bias.zero_()
    x = torch.randn(4, 16, 4, 4)
    grads = {}
    for tau in (1.0, 5.0):
        gate.tau = tau
        gate.zero_grad()
        torch.manual_seed(7)
        _, gates = gate(x)
        gates.sum().backward()
        grads[tau] = (gates.detach(), gate.logits.bias.grad.clone())
    # the hard sample does not depend on tau, its gradient does
    assert torch.equal(grads[1.0][0], grads[5.0][0])
    assert not torch.allclose(grads[1.0][1], grads[5.0][1])

    gate.eval()
    gate.eval_mode = "threshold"
    probs = gate.open_probability(x)
    torch.manual_seed(1)
    first = gate(x)[1]
    assert torch.equal(first, gate(x)[1])
    assert torch.equal(first, (probs > 0.5).float())
    gate.eval_mode = "sample"
    torch.manual_seed(1)
    draws = torch.stack([gate(x)[1] for _ in range(4)])
    assert not all(torch.equal(draws[0], d) for d in draws[1:])


def test_gated_model_deterministic_under_seed():
    outs = []
    for _ in range(2):
        torch.manual_seed(5)
        model = _gated(192).train()
        x = torch.randn(2, 192, 56, 56)
        logits, gates = model(x)
        outs.append((logits.detach(), gates.detach()))
    assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])


def test_heatmap_accumulator():
    acc = HeatmapAccumulator(4)
    acc.update(torch.tensor([[1.0, 0.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0]]))
    acc.update(torch.tensor([[1.0, 1.0, 0.0, 0.0]]))
    assert acc.samples == 3
    assert torch.allclose(acc.frequency(), torch.tensor([1.0, 1 / 3, 1 / 3, 0.0]))
    doc = acc.to_json(["Y0", "Y1", "Cb0", "Cr0"])
    assert doc["samples"] == 3 and doc["channels"] == ["Y0", "Y1", "Cb0", "Cr0"]
    assert doc["frequency"] == pytest.approx([1.0, 1 / 3, 1 / 3, 0.0])
    with pytest.raises(ValueError, match="4 channels"):
        acc.to_json(["Y0"])
    with pytest.raises(ValueError, match=r"expected gates \(N, 4\)"):
        acc.update(torch.ones(2, 5))
    with pytest.raises(ValueError, match="no gates"):
        HeatmapAccumulator(4).frequency()


def test_accumulate_heatmap_over_loader():
    torch.manual_seed(0)
    model = _gated(192).train()
    loader = [torch.randn(2, 192, 8, 8), (torch.randn(3, 192, 8, 8), torch.tensor([0, 1, 2]))]
    heatmap = accumulate_heatmap(model, loader)
    assert model.training and model.gate.training  # mode restored
    assert heatmap.samples == 5
    assert torch.equal(heatmap.frequency(), torch.ones(192))  # threshold eval, all open at init
    doc = heatmap.to_json()
    assert doc["channels"][:2] == ["Y0", "Y1"] and doc["channels"][-1] == "Cr63"
    assert len(doc["frequency"]) == 192


# ---------------------------------------------------------------------------------------------
# RGB checkpoint loading


def _rgb_state(builder, **kw):
    torch.manual_seed(1)
    model = builder(num_classes=NUM_CLASSES, **kw)
    # non-trivial BN statistics, so a wrongly mapped buffer would show
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    return model, model.state_dict()


def test_load_rgb_weights_resnet50_slice_and_tile():
    _, state = _rgb_state(models.resnet50)
    for channels in (24, 192):
        dct = models.resnet50_dct(channels, NUM_CLASSES)
        report = load_rgb_weights(dct, state)
        stem = [k for k in state if k.split(".")[0] in ("conv1", "bn1")]
        assert sorted(report["left_out"]) == sorted(stem)
        assert report["reshaped"] == ["layer1.0.conv1.weight", "layer1.0.downsample.0.weight"]
        assert report["missing"] == []
        own = dct.state_dict()
        for key in report["mapped"]:
            assert torch.equal(own[key], state[key]), key
        index = torch.arange(channels) % 64
        for key in report["reshaped"]:
            assert torch.equal(own[key], state[key][:, index]), key
        if channels == 192:
            conv1 = state["layer1.0.conv1.weight"]
            assert torch.equal(own["layer1.0.conv1.weight"][:, 128:], conv1)


def test_load_rgb_weights_reinit_keeps_fresh_first_block():
    _, state = _rgb_state(models.resnet18)
    torch.manual_seed(3)
    dct = models.resnet18_dct(24, NUM_CLASSES)
    before = {k: v.clone() for k, v in dct.state_dict().items()}
    report = load_rgb_weights(dct, state, first_block="reinit")
    assert report["reshaped"] == []
    assert "layer1.0.conv1.weight" in report["left_out"]
    # resnet18's first block has no projection in RGB; the DCT one keeps its own
    assert {"layer1.0.conv1.weight", "layer1.0.downsample.0.weight"} <= set(report["missing"])
    after = dct.state_dict()
    for key in report["missing"]:
        assert torch.equal(after[key], before[key]), key
    for key in report["mapped"]:
        assert torch.equal(after[key], state[key]), key


def test_load_rgb_weights_mobilenet_v2():
    _, state = _rgb_state(models.mobilenet_v2)
    dct = models.mobilenet_v2_dct(24, NUM_CLASSES)
    report = load_rgb_weights(dct, state)
    assert all(k.startswith("features.0.") for k in report["left_out"])
    assert len(report["left_out"]) == 6  # conv weight + 5 BN entries
    assert sorted(report["reshaped"]) == sorted([
        "features.1.conv.0.0.weight", "features.1.conv.0.1.weight", "features.1.conv.0.1.bias",
        "features.1.conv.0.1.running_mean", "features.1.conv.0.1.running_var",
        "features.1.conv.1.weight",
    ])
    own = dct.state_dict()
    assert torch.equal(own["features.1.conv.0.0.weight"], state["features.1.conv.0.0.weight"][:24])
    assert torch.equal(own["features.1.conv.1.weight"], state["features.1.conv.1.weight"][:, :24])
    for key in report["mapped"]:
        assert torch.equal(own[key], state[key]), key


@pytest.mark.parametrize("name, channels", [("resnet50", 64), ("resnet18", 64),
                                            ("mobilenet_v2", 32)])
def test_loaded_dct_model_continues_rgb_model(name, channels):
    # With C equal to the stem's width nothing is reshaped, so the DCT model fed the RGB
    # model's stem output must compute exactly the RGB model's logits.
    rgb, state = _rgb_state(getattr(models, name))
    rgb.eval()
    dct = getattr(models, name + "_dct")(channels, NUM_CLASSES).eval()
    report = load_rgb_weights(dct, state)
    assert report["reshaped"] == [] and report["missing"] == []
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        if name.startswith("resnet"):
            stem = rgb.maxpool(rgb.relu(rgb.bn1(rgb.conv1(x))))
        else:
            stem = rgb.features[0](x)
        assert torch.allclose(dct(stem), rgb(x), atol=1e-5)


def test_load_rgb_weights_strips_ddp_prefix_and_unwraps_gated_model():
    _, state = _rgb_state(models.resnet18)
    model = GatedModel(ChannelGate(192), models.resnet18_dct(192, NUM_CLASSES))
    report = load_rgb_weights(model, {"module." + k: v for k, v in state.items()})
    assert "layer4.1.conv2.weight" in report["mapped"]
    assert torch.equal(model.backbone.fc.weight, state["fc.weight"])


@pytest.mark.parametrize("name", ["resnet50", "resnet18", "mobilenet_v2"])
def test_torchvision_key_compatibility(name):
    tvm = pytest.importorskip("torchvision.models")
    theirs = getattr(tvm, name)(weights=None, num_classes=NUM_CLASSES).state_dict()
    ours = getattr(models, name)(num_classes=NUM_CLASSES).state_dict()
    assert {k: tuple(v.shape) for k, v in ours.items()} == {
        k: tuple(v.shape) for k, v in theirs.items()
    }
    dct = getattr(models, name + "_dct")(24, NUM_CLASSES)
    report = load_rgb_weights(dct, theirs)
    # only resnet18's new 1x1 projection (the RGB first block has an identity shortcut)
    assert all(k.startswith("layer1.0.downsample.") for k in report["missing"])
    assert len(report["mapped"]) + len(report["reshaped"]) + len(report["left_out"]) == len(theirs)


def test_heatmap_json_is_read_back_by_channel_set(tmp_path):
    jpegfreq = pytest.importorskip("jpegfreq")
    acc = HeatmapAccumulator(192)
    gates = torch.zeros(4, 192)
    gates[:, [0, 1, 8, 64, 128]] = 1.0  # Y0 Y1 Y8 Cb0 Cr0 always open
    gates[:2, 9] = 1.0  # Y9 half the time
    acc.update(gates)
    path = tmp_path / "heatmap.json"
    path.write_text(json.dumps(acc.to_json()))
    top = jpegfreq.ChannelSet.parse(f"top 6 of {path}")
    assert sorted(top.names) == sorted(["Y0", "Y1", "Y8", "Y9", "Cb0", "Cr0"])
    assert models.mobilenet_v2_dct(top, num_classes=NUM_CLASSES).in_channels == 6


# ---------------------------------------------------------------------------------------------
# Built on torchvision's classes


def test_built_on_torchvision_classes():
    from torchvision.models import mobilenetv2 as tv_mobilenet
    from torchvision.models import resnet as tv_resnet
    assert models.BasicBlock is tv_resnet.BasicBlock
    assert models.Bottleneck is tv_resnet.Bottleneck
    assert models.InvertedResidual is tv_mobilenet.InvertedResidual
    for model in (models.resnet50_dct(24), models.resnet18(), models.resnet18_dct(192)):
        assert isinstance(model, tv_resnet.ResNet)
    for model in (models.mobilenet_v2(), models.mobilenet_v2_dct(24)):
        assert isinstance(model, tv_mobilenet.MobileNetV2)
    assert isinstance(models.mobilenet_v2_dct(24).features[0], tv_mobilenet.InvertedResidual)


@pytest.mark.parametrize("name", ["resnet50", "resnet18", "mobilenet_v2"])
def test_torchvision_state_dict_loads_strictly_and_computes_the_same(name):
    import torchvision.models as tvm
    torch.manual_seed(2)
    theirs = getattr(tvm, name)(weights=None, num_classes=NUM_CLASSES).eval()
    ours = getattr(models, name)(num_classes=NUM_CLASSES).eval()
    ours.load_state_dict(theirs.state_dict())          # strict: every key, every shape
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(ours(x), theirs(x))


@pytest.mark.parametrize("name", list(DCT))
def test_frozen_batchnorm_through_norm_layer(name):
    from torchvision.ops.misc import FrozenBatchNorm2d
    side = DCT[name][0]
    plain = build(name, 24)
    frozen = build(name, 24, norm_layer=FrozenBatchNorm2d)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in frozen.modules())
    n_frozen = sum(isinstance(m, FrozenBatchNorm2d) for m in frozen.modules())
    assert n_frozen == sum(isinstance(m, nn.BatchNorm2d) for m in plain.modules())
    # FrozenBatchNorm2d holds its affine terms as buffers: no trainable BN parameters
    bn_params = sum(m.weight.numel() + m.bias.numel() for m in plain.modules()
                    if isinstance(m, nn.BatchNorm2d))
    assert n_params(frozen) == n_params(plain) - bn_params
    for m in plain.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    frozen.load_state_dict(plain.state_dict())       # num_batches_tracked is dropped
    x = torch.randn(2, 24, side, side)
    with torch.no_grad():
        assert torch.allclose(frozen(x), plain(x), atol=1e-5)


def test_gate_channel_names_come_from_the_channel_set():
    from jpegfreq import ChannelSet
    from jpegfreq.models import default_channel_names
    assert default_channel_names(192) == list(ChannelSet.parse("192").names)
    assert default_channel_names(3) == ["0", "1", "2"]


def test_accumulate_heatmap_sends_batches_to_the_gates_device(monkeypatch):
    """Without device=, batches go where the gate's parameters are (a CUDA model gets CUDA
    batches), shown with a stand-in Tensor.to that records its target."""
    model = _gated(192)
    seen = []
    real_to = torch.Tensor.to

    def to(self, *a, **kw):
        seen.append(a[0] if a else kw.get("device"))
        return real_to(self, *a, **kw)

    monkeypatch.setattr(torch.Tensor, "to", to)
    accumulate_heatmap(model, [torch.randn(2, 192, 8, 8)])
    # the batch's move comes first: to the parameters' device object, not a fixed "cpu"
    assert isinstance(seen[0], torch.device)
    assert seen[0] == next(model.gate.parameters()).device
    seen.clear()
    accumulate_heatmap(model, [torch.randn(2, 192, 8, 8)], device="cpu")
    assert seen[0] == "cpu"
