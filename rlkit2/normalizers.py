"""Running mean/std normalizers whose state is part of the agent's checkpoint, and the moments that remote rollout
workers send back so that the learner can merge what each of them saw (rlkit2/remote.py)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn


@dataclass
class Moments:
    """Mean, population variance and count of some rows (float64): all a parallel merge needs."""

    mean: np.ndarray
    var: np.ndarray
    count: float


def merge_moments(a: Moments, b: Moments) -> Moments:
    """The moments of the rows of ``a`` and ``b`` together (Chan, Golub & LeVeque 1979, the parallel update)."""
    total = a.count + b.count
    if b.count == 0:
        return a
    delta = b.mean - a.mean
    mean = a.mean + delta * b.count / total
    m2 = a.var * a.count + b.var * b.count + np.square(delta) * a.count * b.count / total
    return Moments(mean, m2 / total, total)


def moments_since(after: Moments, before: Moments) -> Moments:
    """The moments of the rows added between two snapshots of one running estimate (the inverse of
    ``merge_moments``): a worker starts from the learner's statistics and reports only what it saw itself.
    In float64 the cancellation costs ~1e-16 x before.count / (rows added) relative; the variance is clipped at 0."""
    count = after.count - before.count
    if count <= 0:
        return Moments(np.zeros_like(after.mean), np.zeros_like(after.var), 0.0)
    mean = (after.mean * after.count - before.mean * before.count) / count
    delta = mean - before.mean
    m2 = after.var * after.count - before.var * before.count - np.square(delta) * before.count * count / after.count
    return Moments(mean, np.maximum(m2, 0.0) / count, count)


def on_host(t: Tensor) -> bool:
    """Whether numpy may stand in for torch on ``t``: a CPU tensor outside autograd and outside tracing (export,
    ``torch.compile``). The collector normalizes a few rows per env step, where numpy's per-call cost (~1 us) is
    a fraction of torch's (~3-5 us per op): with obs normalization on, this halves the acting step (PPO, 4-8 envs).
    Same float64/float32 arithmetic either way; sums may round differently in the last bit."""
    return (t.device.type == "cpu" and not t.requires_grad and not torch.jit.is_tracing()
            and not torch.compiler.is_compiling() and not torch.compiler.is_exporting())


class RunningMeanStd(nn.Module):
    """Mean and variance over every row seen so far (Chan et al. parallel update), stored as buffers so
    ``state_dict()`` carries them into checkpoints and onto the agent's device."""

    def __init__(self, shape: tuple[int, ...] = (), epsilon: float = 1e-4):
        super().__init__()
        self.register_buffer("mean", torch.zeros(shape, dtype=torch.float64))
        self.register_buffer("var", torch.ones(shape, dtype=torch.float64))
        self.register_buffer("count", torch.tensor(epsilon, dtype=torch.float64))

    def update(self, batch: Tensor) -> None:
        batch = batch.reshape(-1, *self.mean.shape)
        if on_host(batch) and self.mean.device.type == "cpu":
            self._update_on_host(batch.numpy())
        else:
            self._update(batch.to(torch.float64))

    @torch.no_grad()
    def _update(self, batch: Tensor) -> None:
        batch_count = batch.shape[0]
        batch_mean = batch.mean(0)
        batch_var = batch.var(0, unbiased=False)
        delta = batch_mean - self.mean
        total = self.count + batch_count
        self.mean += delta * batch_count / total
        m2 = self.var * self.count + batch_var * batch_count + delta.square() * self.count * batch_count / total
        self.var.copy_(m2 / total)
        self.count.copy_(total)

    def _update_on_host(self, batch: np.ndarray) -> None:
        """``update`` in numpy, writing the buffers in place (their numpy views share the memory)."""
        batch = batch.astype(np.float64)
        mean, var, count = self.mean.numpy(), self.var.numpy(), self.count.numpy()
        batch_count = batch.shape[0]
        batch_mean = batch.sum(0) / batch_count  # (sum / n: ndarray.mean and .var cost 3-6x more per call)
        batch_var = np.square(batch - batch_mean).sum(0) / batch_count
        delta = batch_mean - mean
        total = count + batch_count
        m2 = var * count + batch_var * batch_count + np.square(delta) * count * batch_count / total
        mean += delta * batch_count / total
        var[...] = m2 / total
        count[...] = total

    @property
    def std(self) -> Tensor:
        return torch.sqrt(self.var + 1e-8)

    def moments(self) -> Moments:
        return Moments(self.mean.detach().cpu().numpy().copy(), self.var.detach().cpu().numpy().copy(),
                       float(self.count))

    @torch.no_grad()
    def merge(self, other: Moments) -> None:
        """Add rows seen elsewhere, given by their moments (a remote worker's); rows of count 0 change nothing."""
        merged = merge_moments(self.moments(), other)
        self.mean.copy_(torch.as_tensor(merged.mean))
        self.var.copy_(torch.as_tensor(merged.var))
        self.count.fill_(merged.count)


class ObservationNormalizer(nn.Module):
    """(obs - mean) / std, clipped to [-clip, clip]. ``enabled=False`` is the identity (but keeps state)."""

    def __init__(self, shape: tuple[int, ...], clip: float = 10.0, enabled: bool = True):
        super().__init__()
        self.rms = RunningMeanStd(shape)
        self.clip = clip
        self.enabled = enabled

    def forward(self, obs: Tensor) -> Tensor:
        if not self.enabled:
            return obs
        if on_host(obs) and self.rms.mean.device.type == "cpu" and obs.dtype == torch.float32:
            out = ((obs.numpy() - self.rms.mean.numpy().astype(np.float32))
                   / np.sqrt(self.rms.var.numpy() + 1e-8).astype(np.float32))
            return torch.from_numpy(np.clip(out, -self.clip, self.clip, out=out) if self.clip > 0 else out)
        normalized = (obs - self.rms.mean.to(obs.dtype)) / self.rms.std.to(obs.dtype)
        return normalized.clamp(-self.clip, self.clip) if self.clip > 0 else normalized

    def update(self, obs: Tensor) -> None:
        if self.enabled:
            self.rms.update(obs)


class ValueNormalizer(nn.Module):
    """Keeps value targets at unit scale: the value head predicts (V - mean) / std (the study's "value
    normalization"; PopArt without output compensation). ``enabled=False`` is the identity."""

    def __init__(self, enabled: bool = True):
        super().__init__()
        self.rms = RunningMeanStd(())
        self.enabled = enabled

    def normalize(self, values: Tensor) -> Tensor:
        if not self.enabled:
            return values
        return (values - self.rms.mean.to(values.dtype)) / self.rms.std.to(values.dtype)

    def denormalize(self, values: Tensor) -> Tensor:
        if not self.enabled:
            return values
        return values * self.rms.std.to(values.dtype) + self.rms.mean.to(values.dtype)

    def update(self, targets: Tensor) -> None:
        if self.enabled:
            self.rms.update(targets)
