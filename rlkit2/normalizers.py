"""Running mean/std normalizers whose state is part of the agent's checkpoint."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class RunningMeanStd(nn.Module):
    """Mean and variance over every row seen so far (Chan et al. parallel update), stored as buffers so
    ``state_dict()`` carries them into checkpoints and onto the agent's device."""

    def __init__(self, shape: tuple[int, ...] = (), epsilon: float = 1e-4):
        super().__init__()
        self.register_buffer("mean", torch.zeros(shape, dtype=torch.float64))
        self.register_buffer("var", torch.ones(shape, dtype=torch.float64))
        self.register_buffer("count", torch.tensor(epsilon, dtype=torch.float64))

    @torch.no_grad()
    def update(self, batch: Tensor) -> None:
        batch = batch.reshape(-1, *self.mean.shape).to(torch.float64)
        batch_count = batch.shape[0]
        batch_mean = batch.mean(0)
        batch_var = batch.var(0, unbiased=False)
        delta = batch_mean - self.mean
        total = self.count + batch_count
        self.mean += delta * batch_count / total
        m2 = self.var * self.count + batch_var * batch_count + delta.square() * self.count * batch_count / total
        self.var.copy_(m2 / total)
        self.count.copy_(total)

    @property
    def std(self) -> Tensor:
        return torch.sqrt(self.var + 1e-8)


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
