"""How close PPO's Atari update comes to this machine's limit: the Nature-CNN's FLOPs, and the rate this machine
reaches on exactly its layer shapes (issue 25, item 3).

FLOPs count a multiply-add as 2. Per sample, a layer's forward costs F; its backward costs F for the weight
gradient plus F for the input gradient, except the first conv, whose input (the frames) needs no gradient. So a
training step costs 3 x forward minus the first conv's F, per sample.

The *shape peak* is what the same library (torch's CPU kernels, oneDNN) reaches on the same shapes in a tight loop:
each layer's forward and backward timed alone at the update's minibatch size (convolutions in the faster of the
NCHW and channels-last layouts), then summed FLOPs / summed time. It
is the ceiling for an update that runs these layers and nothing else; the dense-GEMM rate (one large square
matmul) is the hardware's ceiling at the same thread count, for reference.

    python scripts/bench/cnn_peak.py [--batch 256] [--threads 1 2]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Layer:
    name: str
    module_args: tuple  # Conv2d(in, out, k, stride) or Linear(in, out)
    in_shape: tuple[int, ...]  # per sample
    forward_flops: int  # per sample

    def module(self) -> nn.Module:
        return nn.Conv2d(*self.module_args) if len(self.module_args) == 4 else nn.Linear(*self.module_args)


def _conv(name: str, c_in: int, c_out: int, k: int, stride: int, hw: int) -> tuple[Layer, int]:
    out = (hw - k) // stride + 1
    return Layer(name, (c_in, c_out, k, stride), (c_in, hw, hw), 2 * c_out * out * out * c_in * k * k), out


def nature_cnn_layers(in_channels: int = 4, hw: int = 84, actions: int = 6) -> list[Layer]:
    """Mnih et al. (2015)'s torso (rlkit2/networks.py NatureCNN) with PPO's policy and value heads."""
    conv1, hw1 = _conv("conv1 8x8/4", in_channels, 32, 8, 4, hw)
    conv2, hw2 = _conv("conv2 4x4/2", 32, 64, 4, 2, hw1)
    conv3, hw3 = _conv("conv3 3x3/1", 64, 64, 3, 1, hw2)
    flat = 64 * hw3 * hw3
    return [conv1, conv2, conv3, Layer("fc 3136-512", (flat, 512), (flat,), 2 * flat * 512),
            Layer(f"policy head 512-{actions}", (512, actions), (512,), 2 * 512 * actions),
            Layer("value head 512-1", (512, 1), (512,), 2 * 512)]


def forward_flops(layers: list[Layer]) -> int:
    return sum(layer.forward_flops for layer in layers)


def train_flops(layers: list[Layer]) -> int:
    """Forward + backward per sample: 3F for every layer but the first, whose input needs no gradient (2F)."""
    return sum(3 * layer.forward_flops for layer in layers) - layers[0].forward_flops


def _time(fn, min_seconds: float) -> float:
    fn()  # warm-up: oneDNN picks and caches its kernels
    calls, start = 0, time.perf_counter()
    while True:
        fn()
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return elapsed / calls


def shape_peak(layers: list[Layer], batch: int, threads: int, min_seconds: float = 1.0) -> dict:
    """FLOP/s of forward + backward of each layer alone at ``batch`` samples, and of them all (summed FLOPs over
    summed time): the ceiling for an update made of these layers. Convolutions are timed in both memory layouts
    (contiguous NCHW and channels-last NHWC) and count at the faster, which is recorded."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        per_layer, total_flops, total_seconds = {}, 0, 0.0
        for i, layer in enumerate(layers):
            flops = batch * (3 * layer.forward_flops - (layer.forward_flops if i == 0 else 0))
            layouts = ("contiguous", "channels_last") if len(layer.in_shape) == 3 else ("contiguous",)
            seconds = {}
            for layout in layouts:
                module, x = layer.module(), torch.randn(batch, *layer.in_shape)
                if layout == "channels_last":
                    module, x = module.to(memory_format=torch.channels_last), x.contiguous(
                        memory_format=torch.channels_last)
                x.requires_grad_(i > 0)

                def step(module=module, x=x):
                    module.zero_grad(set_to_none=True)
                    module(x).sum().backward()

                seconds[layout] = _time(step, min_seconds)
            best = min(seconds, key=seconds.get)
            per_layer[layer.name] = {"gflops_per_sec": flops / seconds[best] / 1e9, "ms": 1e3 * seconds[best],
                                     "layout": best, **{f"ms_{k}": 1e3 * v for k, v in seconds.items()}}
            total_flops += flops
            total_seconds += seconds[best]
        return {"threads": threads, "batch": batch, "layers": per_layer,
                "gflops_per_sec": total_flops / total_seconds / 1e9}
    finally:
        torch.set_num_threads(previous)


def gemm_peak(threads: int, n: int = 1024, min_seconds: float = 1.0) -> float:
    """GFLOP/s of one n x n fp32 matmul: the dense-GEMM rate of this machine at ``threads``."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a, b = torch.randn(n, n), torch.randn(n, n)
        return 2 * n ** 3 / _time(lambda: a @ b, min_seconds) / 1e9
    finally:
        torch.set_num_threads(previous)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=256, help="samples per minibatch (the Atari preset's 256)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    layers = nature_cnn_layers()
    print(f"Nature-CNN + heads: {forward_flops(layers) / 1e6:.1f} MFLOP forward, {train_flops(layers) / 1e6:.1f} "
          "MFLOP forward+backward per sample")
    for threads in args.threads:
        peak = shape_peak(layers, args.batch, threads)
        print(f"threads {threads}: shape peak {peak['gflops_per_sec']:.1f} GFLOP/s, dense GEMM "
              f"{gemm_peak(threads):.1f} GFLOP/s; " + ", ".join(f"{name} {v['gflops_per_sec']:.1f}"
                                                            for name, v in peak["layers"].items()))


if __name__ == "__main__":
    main()
