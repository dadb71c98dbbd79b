"""Networks from checkpoints: the model a train.py or detect.py checkpoint was trained with.

The library reads and checks a checkpoint's plain data (jpegfreq.checkpoint: the schema,
load_checkpoint with weights_only=True, preprocessing); building the network is the models'
job, so jpegfreq never imports the networks.

    net = load_model("checkpoint.pth")                  # classifier or detector, eval mode
    net = load_model(ckpt_dict, device="cuda")          # parameters on the device asked for
    net = load_model("checkpoint.pth", device="meta")   # shapes only, no weights read
"""
import torch

from jpegfreq.checkpoint import CheckpointError, check_checkpoint, load_checkpoint

__all__ = ["CLASSIFIER_ARCHS", "DETECTOR_ARCHS", "build_model", "load_model"]

# classification arch -> (RGB builder, DCT builder), names in models.resnet_dct / mobilenet_dct
CLASSIFIER_ARCHS = {
    "resnet50": ("resnet50", "resnet50_dct"),
    "resnet18": ("resnet18", "resnet18_dct"),
    "mobilenetv2": ("mobilenet_v2", "mobilenet_v2_dct"),
    "mobilenet_v2": ("mobilenet_v2", "mobilenet_v2_dct"),
}

# detection arch -> (build_detector task: "bbox" boxes / "segm" boxes + masks, RGB input?)
DETECTOR_ARCHS = {
    "fasterrcnn_resnet50_dct_fpn": ("bbox", False),
    "maskrcnn_resnet50_dct_fpn": ("segm", False),
    "fasterrcnn_resnet50_fpn_rgb": ("bbox", True),
    "maskrcnn_resnet50_fpn_rgb": ("segm", True),
}


def build_model(arch: str, source: str, channels, num_classes: int, gate: bool = False,
                int8_scale=None, **kw):
    """The classification network a checkpoint was trained with (weights not loaded).

    arch: "resnet50" | "resnet18" | "mobilenetv2". source "rgb" gives the RGB baseline, any
    other source the DCT variant for `channels` (an int, a ChannelSet or its spec). gate: a
    ChannelGate in front of the DCT backbone. int8_scale: the per-channel step of int8 input
    (jpegfreq.JpegLoader(dtype="int8").int8_scale): the network turns int8 batches back into
    float with it at its input (float input keeps working); it is the buffer "int8_scale" of
    the state_dict, which load_model reads back. kw go to the builder (e.g. width_mult).
    """
    from . import mobilenet_dct, resnet_dct
    from .gate import ChannelGate, GatedModel
    if arch not in CLASSIFIER_ARCHS:
        raise ValueError(f"unknown arch {arch!r}; expected one of "
                         f"{sorted(set(CLASSIFIER_ARCHS) - {'mobilenet_v2'})}")
    rgb_name, dct_name = CLASSIFIER_ARCHS[arch]
    module = mobilenet_dct if arch.startswith("mobilenet") else resnet_dct
    gated = gate and source != "rgb"
    if int8_scale is not None and not gated:
        kw["int8_scale"] = int8_scale
    if source == "rgb":
        net = getattr(module, rgb_name)(num_classes, **kw)
    else:
        net = getattr(module, dct_name)(channels, num_classes, **kw)
    if gated:    # the step goes in front of the gate, which reads the input too
        net = GatedModel(ChannelGate(net.in_channels), net, int8_scale=int8_scale)
    return net


def _build_detector(ckpt, kwargs, state, name):
    from .detection import build_detector
    arch = ckpt["arch"]
    if arch not in DETECTOR_ARCHS:
        raise CheckpointError(f"{name}: unknown detector arch {arch!r}; expected one of "
                         f"{sorted(DETECTOR_ARCHS)}")
    kind, rgb = DETECTOR_ARCHS[arch]
    if rgb != (ckpt["source"] == "rgb"):
        raise CheckpointError(f"{name}: arch {arch} does not take source {ckpt['source']!r}")
    if not rgb:
        # the weights come from the checkpoint: no backbone file to read again
        kwargs.pop("backbone_weights", None)
        # FrozenBatchNorm2d keeps no num_batches_tracked: a checkpoint without the key
        # recorded was built with it
        kwargs.setdefault("frozen_bn", not any(
            k.startswith("backbone.body.") and k.endswith("num_batches_tracked") for k in state))
    return build_detector(kind, ckpt["source"], ckpt.get("channels"), ckpt["num_classes"],
                          **kwargs)


def load_model(checkpoint, device="cpu", map_location=None):
    """The model of a train.py or detect.py checkpoint (path or dict), weights loaded, in eval
    mode, its parameters and buffers on `device` (map_location: an alias of device).

    A classifier ("task" "classify", the default) is built by build_model, a detector
    ("task" "detect") by models.detection.build_detector, both from the checkpoint's fields
    (arch, source, channels, num_classes, gate, model_kwargs; see jpegfreq.checkpoint).
    device="meta" builds the network without memory and reads no weights. Raises ValueError
    naming the file when the checkpoint is unreadable, unsafe, not of the schema, or its
    state dict does not fit the network it describes.
    """
    if map_location is not None:
        if device != "cpu" and torch.device(device) != torch.device(map_location):
            raise ValueError(f"device={device!r} and map_location={map_location!r} disagree")
        device = map_location
    device = torch.device(device)
    if isinstance(checkpoint, dict):
        name = "checkpoint"
        ckpt = check_checkpoint(checkpoint, name)
    else:
        name = str(checkpoint)
        ckpt = load_checkpoint(checkpoint, map_location=device)
    state = {k[7:] if k.startswith("module.") else k: v for k, v in ckpt["model"].items()}
    kwargs = dict(ckpt.get("model_kwargs") or {})
    with device:
        if ckpt.get("task", "classify") == "detect":
            net = _build_detector(ckpt, kwargs, state, name)
        else:
            # a network trained on int8 input keeps its step as the buffer "int8_scale"
            scale = state.get("int8_scale")
            if scale is not None and not isinstance(scale, torch.Tensor):
                raise CheckpointError(f"{name}: int8_scale in its state dict is not a tensor")
            net = build_model(ckpt["arch"], ckpt["source"], ckpt.get("channels"),
                              ckpt["num_classes"], bool(ckpt.get("gate", False)),
                              int8_scale=scale, **kwargs)
    meta = device.type == "meta"
    if meta:
        state = {k: v.to("meta") if isinstance(v, torch.Tensor) else v for k, v in state.items()}
    try:
        # assign on meta: copying into a meta tensor would be a no-op
        net.load_state_dict(state, assign=meta)
    except RuntimeError as e:
        detail = " ".join(str(e).split())
        raise CheckpointError(f"{name}: its state dict does not fit {ckpt['arch']} (source "
                         f"{ckpt['source']}, channels {ckpt.get('channels')}): "
                         f"{detail[:400]}") from None
    return net.to(device).eval()
