"""Learned channel gate over the full 192-channel spectrum (paper Fig. 4, DCTNet's GateModule192).

Per image, the gate looks at the global average of every frequency channel and decides, channel
by channel, whether the network may use it. The decision is a hard 0/1 sample (Gumbel-softmax
over two logits per channel, "closed" and "open"), trained through the straight-through
estimator, and a regulariser (the fraction of open gates) pushes channels closed unless the task
loss needs them:

    gated, gates = gate(cube)                      # cube (N, 192, H, W), gates (N, 192)
    loss = task_loss + lam * gate_loss(gates)

Over a validation set, each channel's open frequency is the heat map (paper Fig. 5) from which a
static channel set is picked: see HeatmapAccumulator and accumulate_heatmap.
"""

import torch
from torch import nn
from torch.nn import functional as F

from .resnet_dct import _dequantize, _positive_int, _set_int8_scale

__all__ = [
    "ChannelGate",
    "GatedModel",
    "HeatmapAccumulator",
    "accumulate_heatmap",
    "default_channel_names",
    "gate_loss",
    "hard_gumbel_softmax",
]

_CLOSED, _OPEN = 0, 1
_EVAL_MODES = ("threshold", "sample")


def default_channel_names(num_channels=192):
    """The cube's channel names for the full 192-channel spectrum (Y0..Y63, Cb0..Cb63,
    Cr0..Cr63, from jpegfreq.ChannelSet.parse("192").names), else "0".."n-1"."""
    if num_channels == 192:
        from jpegfreq.channels import ChannelSet
        return list(ChannelSet.parse("192").names)
    return [str(k) for k in range(num_channels)]


def hard_gumbel_softmax(logits, tau=1.0, noise=True, dim=-1):
    """One-hot samples of softmax(logits) along dim, with straight-through gradients.

    logits: any shape. tau (default 1.0): temperature of the soft relaxation the gradient
    flows through (the hard sample itself does not depend on it). noise (default True): add
    Gumbel(0, 1) noise, i.e. sample; False takes the argmax (ties go to the lower index).
    Returns a tensor of logits' shape holding exact 0.0 / 1.0 values.
    """
    if noise:
        # Gumbel(0,1) = -log(Exp(1)); exponential_ never returns 0, so the log is finite
        gumbels = -torch.empty_like(logits).exponential_().log()
        logits = logits + gumbels
    soft = F.softmax(logits / tau, dim=dim)
    hard = torch.zeros_like(soft).scatter_(dim, soft.argmax(dim, keepdim=True), 1.0)
    # hard + (soft - soft) keeps forward values exactly 0/1 while gradients see the soft sample
    return hard + (soft - soft.detach())


class ChannelGate(nn.Module):
    """Per-image hard channel gate. Input (N, num_channels, H, W); returns (gated, gates (N, C)).

    num_channels (default 192): channels of the input cube. hidden (default num_channels):
    width of the 1x1 conv after pooling; must be a multiple of num_channels because the
    logits come from a grouped conv (groups=num_channels, two logits per channel).
    tau (default 1.0): Gumbel-softmax temperature, may be changed between steps (annealing).
    eval_mode (default "threshold"): in eval mode, "threshold" opens a gate iff p_open > 0.5
    (deterministic, no RNG use); "sample" draws as in training.
    open_bias (default 5.0): initial logit of "open" minus "closed"; every gate starts open
    (always under "threshold", with probability sigmoid(5) = 0.993 per draw when sampling,
    which leaves the soft relaxation a usable gradient).
    Cost at 192 channels: 38.0 K params, 37 K multiply-adds (it runs on 1x1 pooled features).
    Training mode needs N > 1 (BatchNorm over the pooled features).
    """

    def __init__(self, num_channels=192, hidden=None, tau=1.0, eval_mode="threshold",
                 open_bias=5.0):
        super().__init__()
        num_channels = _positive_int(num_channels, "num_channels")
        hidden = num_channels if hidden is None else _positive_int(hidden, "hidden")
        if hidden % num_channels:
            raise ValueError(
                f"hidden={hidden} must be a multiple of num_channels={num_channels} "
                f"(the logit conv is grouped per channel)"
            )
        self.num_channels = num_channels
        self.tau = tau
        self.eval_mode = eval_mode

        self.pool = nn.AdaptiveAvgPool2d(1)
        self.conv = nn.Conv2d(num_channels, hidden, 1, bias=False)
        self.bn = nn.BatchNorm2d(hidden)
        self.relu = nn.ReLU(inplace=True)
        # output channel 2i is "closed", 2i+1 is "open" for input channel i
        self.logits = nn.Conv2d(hidden, 2 * num_channels, 1, groups=num_channels, bias=True)

        nn.init.kaiming_normal_(self.conv.weight, mode="fan_out", nonlinearity="relu")
        nn.init.ones_(self.bn.weight)
        nn.init.zeros_(self.bn.bias)
        # small weights: the initial decision is the bias, whatever the input statistics
        nn.init.normal_(self.logits.weight, 0.0, 0.01)
        with torch.no_grad():
            self.logits.bias[_CLOSED::2] = 0.0
            self.logits.bias[_OPEN::2] = float(open_bias)

    @property
    def tau(self):
        return self._tau

    @tau.setter
    def tau(self, value):
        if not float(value) > 0:
            raise ValueError(f"tau must be > 0, got {value}")
        self._tau = float(value)

    @property
    def eval_mode(self):
        return self._eval_mode

    @eval_mode.setter
    def eval_mode(self, value):
        if value not in _EVAL_MODES:
            raise ValueError(f"eval_mode must be one of {_EVAL_MODES}, got {value!r}")
        self._eval_mode = value

    def gate_logits(self, x):
        """(N, num_channels, 2) logits: [..., 0] closed, [..., 1] open."""
        if x.dim() != 4 or x.shape[1] != self.num_channels:
            raise ValueError(
                f"expected input (N, {self.num_channels}, H, W), got {tuple(x.shape)}"
            )
        h = self.relu(self.bn(self.conv(self.pool(x))))
        return self.logits(h).view(x.shape[0], self.num_channels, 2)

    def open_probability(self, x):
        """(N, num_channels) probability that each gate opens, without noise."""
        return F.softmax(self.gate_logits(x), dim=-1)[..., _OPEN]

    def forward(self, x):
        logits = self.gate_logits(x)
        sample = self.training or self.eval_mode == "sample"
        gates = hard_gumbel_softmax(logits, self.tau, noise=sample)[..., _OPEN]
        return x * gates[:, :, None, None], gates

    def extra_repr(self):
        return f"num_channels={self.num_channels}, tau={self.tau}, eval_mode={self.eval_mode!r}"


def gate_loss(gates):
    """Regulariser: fraction of open gates (a scalar in [0, 1]), differentiable through the
    straight-through estimator. gates: (N, C) from ChannelGate."""
    return gates.mean()


class GatedModel(nn.Module):
    """gate followed by backbone; forward(x) returns (logits, gates).

    gate: a ChannelGate; backbone: a network taking gate.num_channels input channels
    (e.g. resnet50_dct(192)). Input (N, gate.num_channels, H, W).
    int8_scale (default None): the per-channel step of int8 input (JpegLoader(dtype="int8")
    .int8_scale), kept as the buffer "int8_scale"; int8 input is turned back into float
    before the gate sees it, float input is used as it is.
    """

    def __init__(self, gate, backbone, int8_scale=None):
        super().__init__()
        expected = getattr(backbone, "in_channels", None)
        if expected is not None and expected != gate.num_channels:
            raise ValueError(
                f"backbone takes {expected} channels but the gate has {gate.num_channels}"
            )
        self.gate = gate
        self.backbone = backbone
        _set_int8_scale(self, int8_scale, gate.num_channels)

    @property
    def in_channels(self):
        return self.gate.num_channels

    def forward(self, x):
        gated, gates = self.gate(_dequantize(self, x))
        return self.backbone(gated), gates


class HeatmapAccumulator:
    """Per-channel open frequency over any number of batches (the paper's Fig. 5 heat map).

    num_channels (default 192). update(gates (N, C)) adds a batch; frequency() returns a float
    tensor (C,) in [0, 1]. The raw sums (open_counts, float64 (C,), and samples) are public so
    that distributed runs can all-reduce them before frequency().
    """

    def __init__(self, num_channels=192):
        self.num_channels = _positive_int(num_channels, "num_channels")
        self.reset()

    def reset(self):
        self.open_counts = torch.zeros(self.num_channels, dtype=torch.float64)
        self.samples = 0

    def update(self, gates):
        gates = gates.detach()
        if gates.dim() != 2 or gates.shape[1] != self.num_channels:
            raise ValueError(
                f"expected gates (N, {self.num_channels}), got {tuple(gates.shape)}"
            )
        self.open_counts += gates.sum(0).to("cpu", torch.float64)
        self.samples += gates.shape[0]

    def frequency(self):
        if self.samples == 0:
            raise ValueError("no gates accumulated yet")
        return (self.open_counts / self.samples).float()

    def to_json(self, names=None):
        """{"samples": int, "channels": [names], "frequency": [open frequency]}, channel order.

        The heat-map format jpegfreq.ChannelSet reads ("top 24 of heatmap.json").

        names (default: ChannelSet.parse("192").names for 192 channels, else "0".."C-1"):
        one per channel, e.g. the .names of the ChannelSet the cube was built with.
        """
        names = default_channel_names(self.num_channels) if names is None else list(names)
        if len(names) != self.num_channels:
            raise ValueError(f"{len(names)} names for {self.num_channels} channels")
        freq = self.frequency().tolist()
        return {"samples": self.samples, "channels": [str(n) for n in names], "frequency": freq}


def _find_gate(model_or_gate):
    if isinstance(model_or_gate, ChannelGate):
        return model_or_gate
    gates = [m for m in model_or_gate.modules() if isinstance(m, ChannelGate)]
    if len(gates) != 1:
        raise ValueError(f"expected exactly one ChannelGate in the model, found {len(gates)}")
    return gates[0]


@torch.no_grad()
def accumulate_heatmap(model_or_gate, loader, device=None):
    """Open frequency per channel over a loader; returns a HeatmapAccumulator.

    model_or_gate: a ChannelGate or a model containing exactly one (e.g. GatedModel); only
    the gate runs, in eval mode (its eval_mode decides threshold vs sample), and its
    train/eval state is restored afterwards. loader: yields cubes (N, C, H, W) or tuples
    whose first item is the cube. device: where the batches go (default: the device of the
    gate's parameters, so a CUDA model gets CUDA batches).
    """
    gate = _find_gate(model_or_gate)
    if device is None:
        device = next(gate.parameters()).device
    was_training = gate.training
    gate.eval()
    heatmap = HeatmapAccumulator(gate.num_channels)
    try:
        for batch in loader:
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            _, gates = gate(x.to(device))
            heatmap.update(gates)
    finally:
        gate.train(was_training)
    return heatmap
