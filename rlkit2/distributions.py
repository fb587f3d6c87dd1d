"""Action distributions, written out (no torch.distributions validation overhead in the hot path).

- ``DiagGaussian``: independent Gaussians; log-probs summed over action dims.
- ``TanhGaussian``: a = tanh(u), u ~ N(mean, std), with the change-of-variables correction (SAC/DSAC).
- ``Categorical``: discrete actions from logits.
- ``std_from_param``: the study's std parameterisations (softplus with an offset, or exp) and a floor.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


def softplus_offset(init_std: float, min_std: float) -> float:
    """The constant c with softplus(0 + c) + min_std == init_std, so a zero-initialised parameter starts at
    ``init_std``."""
    target = init_std - min_std
    if target <= 0:
        raise ValueError(f"init_std ({init_std}) must be larger than min_std ({min_std})")
    return math.log(math.expm1(target))


def std_from_param(param: Tensor, transform: str, init_std: float, min_std: float) -> Tensor:
    """Map an unconstrained parameter (zero at initialisation) to a std that starts at ``init_std`` and never
    goes below ``min_std``."""
    if init_std <= min_std:
        raise ValueError(f"init_std ({init_std}) must be larger than min_std ({min_std})")
    if transform == "softplus":
        return F.softplus(param + softplus_offset(init_std, min_std)) + min_std
    if transform == "exp":
        return torch.exp(param + math.log(init_std - min_std)) + min_std
    raise ValueError(f"Unknown std transform '{transform}'. Allowed: softplus, exp")


class DiagGaussian:
    def __init__(self, mean: Tensor, std: Tensor):
        self.mean = mean
        self.std = std.expand_as(mean)

    def sample(self, noise: Tensor | None = None) -> Tensor:
        """mean + std * noise; ``noise`` ~ N(0, 1) drawn here unless given (e.g. drawn outside a compiled graph)."""
        return self.mean + self.std * (torch.randn_like(self.mean) if noise is None else noise)

    def mode(self) -> Tensor:
        return self.mean

    def log_prob(self, x: Tensor) -> Tensor:
        z = (x - self.mean) / self.std
        return (-0.5 * z.square() - torch.log(self.std) - _LOG_SQRT_2PI).sum(-1)

    def entropy(self) -> Tensor:
        return (0.5 + _LOG_SQRT_2PI + torch.log(self.std)).sum(-1)


class TanhGaussian:
    """a = tanh(u); log pi(a) = log N(u) - sum log(1 - tanh(u)^2), computed stably as
    2 (log 2 - u - softplus(-2u)) (as in SAC implementations)."""

    def __init__(self, mean: Tensor, std: Tensor):
        self.base = DiagGaussian(mean, std)

    def rsample_with_log_prob(self, noise: Tensor | None = None) -> tuple[Tensor, Tensor]:
        u = self.base.sample(noise)  # reparameterised: mean + std * eps
        return torch.tanh(u), self.log_prob_from_pre_tanh(u)

    def log_prob_from_pre_tanh(self, u: Tensor) -> Tensor:
        return self.base.log_prob(u) - self.log_det_jacobian(u)

    @staticmethod
    def log_det_jacobian(u: Tensor) -> Tensor:
        """sum_i log(1 - tanh(u_i)^2) = log |det d tanh(u)/du|, summed over action dims."""
        return (2.0 * (math.log(2.0) - u - F.softplus(-2.0 * u))).sum(-1)

    def entropy_estimate(self) -> Tensor:
        """A one-sample estimate of H[tanh(u)] = H[N(mean, std)] + E_u[log |det d tanh(u)/du|] at a *fresh*
        reparameterised sample, so its gradient is that of the squashed policy's entropy (seed_rl's and brax's
        tanh-transformed distributions compute it this way). The squashed policy's entropy is bounded, unlike
        the Gaussian's: a wide std saturates the actions at +-1 and the log-det term then falls."""
        return self.base.entropy() + self.log_det_jacobian(self.base.sample())

    def mode(self) -> Tensor:
        return torch.tanh(self.base.mean)


class Categorical:
    def __init__(self, logits: Tensor):
        self.logits = logits - logits.logsumexp(-1, keepdim=True)

    def sample(self) -> Tensor:
        return torch.multinomial(self.logits.exp(), 1).squeeze(-1)

    def mode(self) -> Tensor:
        return self.logits.argmax(-1)

    def log_prob(self, actions: Tensor) -> Tensor:
        return self.logits.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)

    def entropy(self) -> Tensor:
        return -(self.logits.exp() * self.logits).sum(-1)
