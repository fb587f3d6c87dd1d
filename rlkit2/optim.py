"""Optimizers that torch does not ship, and the functional form of an optimizer's step (for a compiled update).

``RMSpropTF``: RMSprop as TensorFlow 1 computes it, which is what openai/baselines' A2C (and so the A2C results
people compare with) trained with. It differs from ``torch.optim.RMSprop`` in two places:
- the square average starts at 1, not 0 (torch's first steps are ~1/sqrt(1 - alpha) = 10x larger at alpha 0.99);
- epsilon is added inside the square root: g / sqrt(v + eps), not g / (sqrt(v) + eps).
Stable-Baselines3 ships the same rule as ``RMSpropTFLike`` and recommends it for matching baselines' A2C.

``functional_step``: the step of an optimizer object applied to gradients given as tensors, through torch's own
functional optimizers (``torch.optim.adam.adam``, ``torch.optim.rmsprop.rmsprop``) on the object's state, so that
``torch.compile`` can put it in one graph with the backward pass (rlkit2.update_step). ``init_state`` creates that
state as the optimizer's lazy first step would, so checkpoints and the eager ``step()`` read the same tensors.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.optim.adam import adam as adam_update
from torch.optim.rmsprop import rmsprop as rmsprop_update


class RMSpropTF(torch.optim.Optimizer):
    """v <- alpha v + (1 - alpha) g^2 (v_0 = 1);  (centered: m <- alpha m + (1 - alpha) g, v - m^2 below);
    step = g / sqrt(v + eps);  (momentum: b <- momentum b + step);  p <- p - lr * step (or b)."""

    def __init__(self, params, lr: float = 1e-2, alpha: float = 0.99, eps: float = 1e-8, momentum: float = 0.0,
                 centered: bool = False):
        if lr < 0 or eps < 0 or momentum < 0 or not 0.0 <= alpha <= 1.0:
            raise ValueError(f"RMSpropTF: invalid lr={lr}, alpha={alpha}, eps={eps} or momentum={momentum}")
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, momentum=momentum, centered=centered))

    def init_state(self, p: Tensor) -> dict[str, Tensor]:
        state = self.state[p]
        if not state:
            group = self.param_groups[0]
            state["square_avg"] = torch.ones_like(p)  # TF's initialisation (torch: zeros)
            if group["momentum"] > 0:
                state["momentum_buffer"] = torch.zeros_like(p)
            if group["centered"]:
                state["grad_avg"] = torch.zeros_like(p)
        return state

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            with_grad = [p for p in group["params"] if p.grad is not None]
            rmsprop_tf_update(with_grad, [p.grad for p in with_grad], [self.init_state(p) for p in with_grad],
                              group["lr"], group["alpha"], group["eps"], group["momentum"], group["centered"])
        return loss


def rmsprop_tf_update(params: list[Tensor], grads: list[Tensor], states: list[dict[str, Tensor]], lr: float | Tensor,
                      alpha: float, eps: float, momentum: float, centered: bool) -> None:
    """RMSpropTF's rule on given gradients (in place on ``params`` and ``states``)."""
    for p, grad, state in zip(params, grads, states):
        square_avg = state["square_avg"]
        square_avg.mul_(alpha).addcmul_(grad, grad, value=1 - alpha)
        if centered:
            grad_avg = state["grad_avg"]
            grad_avg.mul_(alpha).add_(grad, alpha=1 - alpha)
            denom = square_avg.addcmul(grad_avg, grad_avg, value=-1).add_(eps).sqrt_()
        else:
            denom = square_avg.add(eps).sqrt_()  # eps inside the square root (torch: outside)
        if momentum > 0:
            buf = state["momentum_buffer"]
            buf.mul_(momentum).addcdiv_(grad, denom)
            p.sub_(lr * buf)
        else:
            p.sub_(lr * grad / denom)


def init_state(optimizer: torch.optim.Optimizer) -> None:
    """Create every parameter's optimizer state now, laid out as the optimizer's own first step would."""
    _check_supported(optimizer)
    group = optimizer.param_groups[0]
    for p in group["params"]:
        state = optimizer.state[p]
        if isinstance(optimizer, RMSpropTF):
            optimizer.init_state(p)
        elif not state:
            # "step" as torch keeps it for fused / capturable optimizers: a float32 scalar on the parameter's device
            state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
            if isinstance(optimizer, torch.optim.Adam):
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            else:  # RMSprop
                state["square_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                if group["momentum"] > 0:
                    state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                if group["centered"]:
                    state["grad_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        if "step" in state:  # a checkpoint's step may have been loaded as a CPU tensor: keep it with the parameter
            state["step"] = state["step"].to(device=p.device, dtype=torch.float32)


STATE_KEYS = {"adam": ("step", "exp_avg", "exp_avg_sq"),
              "rmsprop": ("step", "square_avg", "grad_avg", "momentum_buffer"),
              "rmsprop_tf": ("square_avg", "grad_avg", "momentum_buffer")}


def state_lists(optimizer: torch.optim.Optimizer) -> dict[str, list[Tensor]]:
    """The optimizer's state as one list per kind, in parameter order (``init_state`` first): what
    ``functional_step`` takes."""
    params = optimizer.param_groups[0]["params"]
    keys = STATE_KEYS[_kind(optimizer)]
    return {key: [optimizer.state[p][key] for p in params] for key in keys if key in optimizer.state[params[0]]}


def functional_step(optimizer: torch.optim.Optimizer, params: list[Tensor], grads: list[Tensor],
                    state: dict[str, list[Tensor]], lr: Tensor) -> None:
    """``optimizer.step()`` with ``grads`` in place of the parameters' ``.grad``, on ``state`` (from ``state_lists``)
    and with the learning rate as a tensor (so that a decaying lr does not recompile a compiled caller).
    ``optimizer`` only gives the hyperparameters: the tensors come as arguments, so that a compiled caller takes
    them as plain graph inputs instead of looking them up in the optimizer's tensor-keyed state dict."""
    group, kind = optimizer.param_groups[0], _kind(optimizer)
    # Compiled: the capturable variants (the step count and lr as tensors in the graph). Run eagerly (a disabled
    # compiler), torch allows capturable on accelerators only, and then a plain float lr.
    capturable = torch.compiler.is_compiling()
    if not capturable:
        lr = float(lr)
    if kind == "rmsprop_tf":
        states = [{key: values[i] for key, values in state.items()} for i in range(len(params))]
        rmsprop_tf_update(params, grads, states, lr, group["alpha"], group["eps"], group["momentum"],
                          group["centered"])
    elif kind == "adam":
        beta1, beta2 = group["betas"]
        adam_update(params, grads, state["exp_avg"], state["exp_avg_sq"], [], state["step"], foreach=True,
                    capturable=capturable, amsgrad=False, beta1=beta1, beta2=beta2, lr=lr,
                    weight_decay=group["weight_decay"], eps=group["eps"], maximize=group["maximize"],
                    decoupled_weight_decay=group.get("decoupled_weight_decay", False))
    else:
        rmsprop_update(params, grads, state["square_avg"], state.get("grad_avg", []),
                       state.get("momentum_buffer", []), state["step"], foreach=True, capturable=capturable,
                       maximize=group["maximize"], lr=lr, alpha=group["alpha"], eps=group["eps"],
                       weight_decay=group["weight_decay"], momentum=group["momentum"], centered=group["centered"])


def _kind(optimizer: torch.optim.Optimizer) -> str:
    kinds = {torch.optim.Adam: "adam", torch.optim.RMSprop: "rmsprop", RMSpropTF: "rmsprop_tf"}
    if type(optimizer) not in kinds:
        raise TypeError(f"functional_step supports Adam, RMSprop and RMSpropTF, not {type(optimizer).__name__}")
    return kinds[type(optimizer)]


def _check_supported(optimizer: torch.optim.Optimizer) -> None:
    _kind(optimizer)
    if len(optimizer.param_groups) != 1:
        raise ValueError("functional_step supports optimizers with one parameter group")
    if optimizer.param_groups[0].get("amsgrad"):
        raise ValueError("functional_step does not support amsgrad")
