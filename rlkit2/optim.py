"""Optimizers that torch does not ship.

``RMSpropTF``: RMSprop as TensorFlow 1 computes it, which is what openai/baselines' A2C (and so the A2C results
people compare with) trained with. It differs from ``torch.optim.RMSprop`` in two places:
- the square average starts at 1, not 0 (torch's first steps are ~1/sqrt(1 - alpha) = 10x larger at alpha 0.99);
- epsilon is added inside the square root: g / sqrt(v + eps), not g / (sqrt(v) + eps).
Stable-Baselines3 ships the same rule as ``RMSpropTFLike`` and recommends it for matching baselines' A2C.
"""

from __future__ import annotations

import torch


class RMSpropTF(torch.optim.Optimizer):
    """v <- alpha v + (1 - alpha) g^2 (v_0 = 1);  (centered: m <- alpha m + (1 - alpha) g, v - m^2 below);
    step = g / sqrt(v + eps);  (momentum: b <- momentum b + step);  p <- p - lr * step (or b)."""

    def __init__(self, params, lr: float = 1e-2, alpha: float = 0.99, eps: float = 1e-8, momentum: float = 0.0,
                 centered: bool = False):
        if lr < 0 or eps < 0 or momentum < 0 or not 0.0 <= alpha <= 1.0:
            raise ValueError(f"RMSpropTF: invalid lr={lr}, alpha={alpha}, eps={eps} or momentum={momentum}")
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, momentum=momentum, centered=centered))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            alpha, eps, momentum = group["alpha"], group["eps"], group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                state = self.state[p]
                if not state:
                    state["square_avg"] = torch.ones_like(p)  # TF's initialisation (torch: zeros)
                    if momentum > 0:
                        state["momentum_buffer"] = torch.zeros_like(p)
                    if group["centered"]:
                        state["grad_avg"] = torch.zeros_like(p)
                square_avg = state["square_avg"]
                square_avg.mul_(alpha).addcmul_(grad, grad, value=1 - alpha)
                if group["centered"]:
                    grad_avg = state["grad_avg"]
                    grad_avg.mul_(alpha).add_(grad, alpha=1 - alpha)
                    denom = square_avg.addcmul(grad_avg, grad_avg, value=-1).add_(eps).sqrt_()
                else:
                    denom = square_avg.add(eps).sqrt_()  # eps inside the square root (torch: outside)
                if momentum > 0:
                    buf = state["momentum_buffer"]
                    buf.mul_(momentum).addcdiv_(grad, denom)
                    p.add_(buf, alpha=-group["lr"])
                else:
                    p.addcdiv_(grad, denom, value=-group["lr"])
        return loss
