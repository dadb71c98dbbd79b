"""Networks from checkpoints: the model a train.py (or detect.py) checkpoint was trained with.

The library reads a checkpoint's plain data (jpegfreq.checkpoint: pre-processing, classes);
building the network is the models' job, so jpegfreq never imports the networks.
"""
from jpegfreq.channels import ChannelSet
from jpegfreq.checkpoint import load_checkpoint, preprocessing


def build_model(arch: str, source: str, channels, num_classes: int, gate: bool = False):
    """The network a checkpoint was trained with (weights not loaded)."""
    from . import mobilenet_dct, resnet_dct
    from .gate import ChannelGate, GatedModel
    rgb = source == "rgb"
    if arch == "resnet50":
        net = resnet_dct.resnet50(num_classes) if rgb else resnet_dct.resnet50_dct(channels, num_classes)
    elif arch == "resnet18":
        net = resnet_dct.resnet18(num_classes) if rgb else resnet_dct.resnet18_dct(channels, num_classes)
    elif arch in ("mobilenetv2", "mobilenet_v2"):
        net = (mobilenet_dct.mobilenet_v2(num_classes) if rgb
               else mobilenet_dct.mobilenet_v2_dct(channels, num_classes))
    else:
        raise ValueError(f"unknown arch {arch!r}")
    if gate and not rgb:
        net = GatedModel(ChannelGate(ChannelSet.parse(channels).count), net)
    return net


def load_model(checkpoint, map_location="cpu"):
    """The model of a train.py checkpoint (path or dict), weights loaded, in eval mode."""
    ckpt = load_checkpoint(checkpoint, map_location) if not isinstance(checkpoint, dict) else checkpoint
    pre = preprocessing(ckpt)
    net = build_model(ckpt["arch"], pre["source"], pre["channels"], int(ckpt["num_classes"]),
                      bool(ckpt.get("gate", False)))
    state = {k[7:] if k.startswith("module.") else k: v for k, v in ckpt["model"].items()}
    net.load_state_dict(state)
    return net.eval()
