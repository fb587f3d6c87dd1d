"""Torsos (MLP, Nature-CNN) and initialisers."""

from __future__ import annotations

import contextlib
import math
from typing import Sequence

import torch
from torch import nn

ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "elu": nn.ELU, "gelu": nn.GELU, "silu": nn.SiLU,
               "leaky_relu": nn.LeakyReLU}
INITIALIZERS = ("orthogonal", "xavier_uniform", "lecun_normal", "torch_default")


def activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ValueError(f"Unknown activation '{name}'. Allowed: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


def init_layer(layer: nn.Module, initializer: str, scale: float = 1.0) -> nn.Module:
    """Initialise a Linear/Conv layer's weights (scaled by ``scale``) and zero its bias.
    orthogonal uses gain sqrt(2) * scale for hidden layers by convention of the caller (see MLP)."""
    if initializer == "torch_default":
        with torch.no_grad():
            layer.weight.mul_(scale)
        return layer
    if initializer == "orthogonal":
        nn.init.orthogonal_(layer.weight, gain=scale)
    elif initializer == "xavier_uniform":
        nn.init.xavier_uniform_(layer.weight, gain=scale)
    elif initializer == "lecun_normal":
        fan_in = layer.weight[0].numel()
        nn.init.normal_(layer.weight, std=scale / math.sqrt(fan_in))
    else:
        raise ValueError(f"Unknown initializer '{initializer}'. Allowed: {', '.join(INITIALIZERS)}")
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)
    return layer


def mlp(in_dim: int, hidden: Sequence[int], out_dim: int | None, act: str = "tanh",
        initializer: str = "orthogonal", out_scale: float = 1.0) -> nn.Sequential:
    """Linear-act-...-Linear. Hidden layers get gain sqrt(2) for orthogonal init; the output layer
    ``out_scale`` (e.g. 0.01 for the policy head, the study's "last layer scaled down")."""
    _check_widths(hidden)
    layers: list[nn.Module] = []
    dim = in_dim
    hidden_gain = math.sqrt(2) if initializer == "orthogonal" else 1.0
    for width in hidden:
        layers += [init_layer(nn.Linear(dim, width), initializer, hidden_gain), activation(act)]
        dim = width
    if out_dim is not None:
        layers.append(init_layer(nn.Linear(dim, out_dim), initializer, out_scale))
    return nn.Sequential(*layers)


def _check_widths(hidden: Sequence[int]) -> None:
    # a width of 0 builds a network that trains without error and learns nothing
    if any(width < 1 for width in hidden):
        raise ValueError(f"hidden layer widths must be >= 1, got {tuple(hidden)} — e.g. --policy_hidden 64,64 "
                         "(the options ending in 'hidden'; an empty list means no hidden layer)")


CNN_PRECISIONS = ("fp32", "bf16")


class NatureCNN(nn.Module):
    """Mnih et al. (2015) torso: uint8 frames [B, C, 84, 84] -> 512 features. Scales by 1/255 itself.
    ``precision="bf16"`` runs the convolutions and the FC layer under bfloat16 autocast (weights and the
    returned features stay fp32): the same network, 1.9x faster for PPO on a CPU with AVX512-BF16; without native
    bf16 about 10x slower, so the agents refuse it there (rlkit2/device.py:check_bf16), docs/benchmarks.md, "PPO on
    Atari: CNN precision"."""

    def __init__(self, in_channels: int, out_dim: int = 512, initializer: str = "orthogonal",
                 input_hw: tuple[int, int] = (84, 84), precision: str = "fp32"):
        super().__init__()
        self.bf16 = _is_bf16(precision)
        gain = math.sqrt(2) if initializer == "orthogonal" else 1.0
        self.convs = nn.Sequential(
            init_layer(nn.Conv2d(in_channels, 32, 8, stride=4), initializer, gain), nn.ReLU(),
            init_layer(nn.Conv2d(32, 64, 4, stride=2), initializer, gain), nn.ReLU(),
            init_layer(nn.Conv2d(64, 64, 3, stride=1), initializer, gain), nn.ReLU(),
            nn.Flatten(),
        )
        with torch.no_grad():
            flat = self.convs(torch.zeros(1, in_channels, *input_hw)).shape[1]
        self.fc = nn.Sequential(init_layer(nn.Linear(flat, out_dim), initializer, gain), nn.ReLU())
        self.out_dim = out_dim
        # Channels-last (NHWC) weights and inputs: oneDNN's convolution kernels run the first conv (4 -> 32
        # channels, 8x8 stride 4) about 3x as fast in this layout on a CPU, and the whole torso's forward + backward
        # ~1.6x (scripts/bench/cnn_peak.py, docs/benchmarks.md); the same math, and the flatten before the FC layer
        # keeps the logical (C, H, W) order, so checkpoints of either layout load into the other.
        self.convs.to(memory_format=torch.channels_last)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        x = (frames.float() / 255.0).contiguous(memory_format=torch.channels_last)
        with _bf16_autocast(frames) if self.bf16 else contextlib.nullcontext():
            features = self.fc(self.convs(x))
        return features.float()


class EnsembleMLP(nn.Module):
    """E independent MLPs evaluated together: one batched matmul (``baddbmm``) per layer instead of E
    module calls. Used for twin critics (DSAC-T) and reward-model ensembles.

    Weights are ``[E, in, out]``, biases ``[E, 1, out]``, both initialised like ``nn.Linear``'s default
    (uniform in ±1/sqrt(fan_in)), so member e computes exactly what an ``nn.Linear`` stack would.
    ``forward(x)`` takes ``[B, in]`` (the same input for every member) or ``[E, B, in]`` and returns
    ``[E, B, out]``. ``params`` replaces the module's own tensors (e.g. detached copies, so a loss can
    differentiate through the network's input without reaching its weights)."""

    def __init__(self, ensemble_size: int, in_dim: int, hidden: Sequence[int], out_dim: int, act: str = "relu"):
        super().__init__()
        if ensemble_size < 1:
            raise ValueError(f"ensemble_size must be >= 1, got {ensemble_size}")
        _check_widths(hidden)
        dims = [in_dim, *hidden, out_dim]
        self.ensemble_size = ensemble_size
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for fan_in, fan_out in zip(dims[:-1], dims[1:]):
            bound = 1.0 / math.sqrt(fan_in)
            self.weights.append(nn.Parameter(torch.empty(ensemble_size, fan_in, fan_out).uniform_(-bound, bound)))
            self.biases.append(nn.Parameter(torch.empty(ensemble_size, 1, fan_out).uniform_(-bound, bound)))
        self.act = activation(act)

    def param_lists(self, detach: bool = False) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        ws, bs = list(self.weights), list(self.biases)
        if detach:
            ws, bs = [w.detach() for w in ws], [b.detach() for b in bs]
        return ws, bs

    def forward(self, x: torch.Tensor,
                params: tuple[list[torch.Tensor], list[torch.Tensor]] | None = None) -> torch.Tensor:
        ws, bs = params if params is not None else (self.weights, self.biases)
        if x.dim() == 2:
            x = x.unsqueeze(0).expand(self.ensemble_size, *x.shape)
        last = len(ws) - 1
        for i, (w, b) in enumerate(zip(ws, bs)):
            x = torch.baddbmm(b, x, w)
            if i < last:
                x = self.act(x)
        return x


class GridCNN(nn.Module):
    """Small symbolic grids (MiniGrid's 7x7 view): 3 x [conv 32, 3x3, stride 2, padding 1, ELU] then FC ``out_dim``
    ELU, the AGAC code's tower. Input ``uint8 [B, C, H, W]`` of small integer codes (object, colour, state ids),
    used as floats without the /255 of pixel frames."""

    def __init__(self, in_channels: int, out_dim: int = 256, initializer: str = "orthogonal",
                 input_hw: tuple[int, int] = (7, 7), precision: str = "fp32"):
        super().__init__()
        self.bf16 = _is_bf16(precision)  # as NatureCNN's; the grid tower is small enough that it rarely pays
        gain = math.sqrt(2) if initializer == "orthogonal" else 1.0
        layers: list[nn.Module] = []
        channels = in_channels
        for _ in range(3):
            layers += [init_layer(nn.Conv2d(channels, 32, 3, stride=2, padding=1), initializer, gain), nn.ELU()]
            channels = 32
        self.convs = nn.Sequential(*layers, nn.Flatten())
        with torch.no_grad():
            flat = self.convs(torch.zeros(1, in_channels, *input_hw)).shape[1]
        self.fc = nn.Sequential(init_layer(nn.Linear(flat, out_dim), initializer, gain), nn.ELU())
        self.out_dim = out_dim

    def forward(self, grid: torch.Tensor) -> torch.Tensor:
        with _bf16_autocast(grid) if self.bf16 else contextlib.nullcontext():
            features = self.fc(self.convs(grid.float()))
        return features.float()


def _bf16_autocast(x: torch.Tensor) -> torch.autocast:
    return torch.autocast(x.device.type, dtype=torch.bfloat16)


def _is_bf16(precision: str) -> bool:
    if precision not in CNN_PRECISIONS:
        raise ValueError(f"Unknown CNN precision '{precision}'. Allowed: {', '.join(CNN_PRECISIONS)}")
    return precision == "bf16"


def image_torso(obs_shape: Sequence[int], initializer: str = "orthogonal", precision: str = "fp32") -> nn.Module:
    """The conv torso for ``uint8 [C, H, W]`` observations: Nature-CNN for frames of at least 36x36 (Atari's
    84x84 stacks; it needs 36), the small ``GridCNN`` below that (MiniGrid's 7x7). Has ``out_dim``."""
    channels, height, width = obs_shape
    if min(height, width) >= 36:
        return NatureCNN(channels, initializer=initializer, input_hw=(height, width), precision=precision)
    return GridCNN(channels, initializer=initializer, input_hw=(height, width), precision=precision)
