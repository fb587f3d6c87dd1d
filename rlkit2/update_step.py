"""One minibatch update -- forward, backward, gradient clipping and the optimizer step -- eager or as one
``torch.compile`` graph.

Why a graph of the whole step: with small networks on a CPU the update is per-operation overhead, not arithmetic
(PPO's MuJoCo minibatch: two 64x64 MLPs, 64 samples). Compiling only the loss leaves the autograd engine,
``clip_grad_norm_`` and ``optimizer.step()`` running op by op in Python every minibatch, and compiling a function
that calls ``loss.backward()`` splits the graph at the backward call and around ``optimizer.step()`` (torch's
"compiled optimizer" recipe: three graphs and eager glue in between). So the compiled step is written
functionally: gradients from ``torch.func.grad_and_value``, clipping as ``clip_grad_norm_`` computes it, and the
optimizer's own functional update (rlkit2.optim.functional_step) on the optimizer object's state tensors, so that
checkpoints, the learning-rate schedule and the eager path all see one optimizer. The same math as the eager
step, to float rounding (tests/agents/test_update_step.py).

Guards: before each call of a compiled function torch checks that what it was compiled for still holds -- about
800 checks here (the network's module tree, config values, the parameter aliasing ``functional_call`` looks at),
a quarter of the step's time on a 64x64 MLP in a short alternating measurement. Everything but the tensors is
fixed for the life of a ``MinibatchUpdate`` (its model, loss function, optimizers and config), so the compiled
step keeps the tensor checks only (shape, dtype, device: a last, smaller minibatch still gets its own graph), and
each ``MinibatchUpdate`` compiles its own copy of the step function, so that no other instance -- another agent
in the same process, with other constants -- can ever match its graphs (torch keeps compiled graphs per code
object). The price: a config value changed after the first update is not seen by the compiled step.

Nothing is read back to the host per minibatch: each step adds its statistics (the loss function's, then the
gradient norm of each parameter group) into a tensor the caller passes, which the caller reads once per update
(also the place to detect a non-finite loss).

Off-policy updates (DSAC) need two more things, both part of the step and so of its graph: Polyak-averaged target
copies of a group's parameters (``ParamGroup.target``: target <- target + tau (params - target) after the group's
optimizer step), and state that is not a parameter but is computed by the loss (DSAC-T's running sigma_bar): a
loss function may return its new values as a third element, and the step returns them to the caller, who passes
the state back in with the next minibatch. A step whose groups step under a condition (DSAC's delayed policy
update) is two ``MinibatchUpdate`` objects over the same model, optimizers and loss function: two graphs.
"""

from __future__ import annotations

import sys
import time
import types
import warnings
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad_and_value

from rlkit2 import optim

LossFn = Callable[..., tuple[Tensor, Tensor] | tuple[Tensor, Tensor, tuple[Tensor, ...]]]
"""loss_fn(*minibatch) -> (the scalar loss, a 1-D tensor of statistics to accumulate[, new values of non-parameter
state, returned by the step without gradient])."""


@dataclass
class ParamGroup:
    """Parameters stepped by one optimizer, their gradient clipped to a global norm (0 = no clipping); with
    ``target``, Polyak-averaged copies of them moved after each step: target <- target + tau (params - target)."""

    params: list[nn.Parameter]
    optimizer: torch.optim.Optimizer
    max_grad_norm: float = 0.0
    target: list[Tensor] | None = None
    tau: float = 0.0


class _LossModule(nn.Module):
    """The model as a submodule and the loss as forward, so that ``functional_call`` can substitute the
    parameters of whatever the loss function calls (forward, or any other method of the model)."""

    def __init__(self, model: nn.Module, loss_fn: LossFn):
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn

    def forward(self, *minibatch: Tensor) -> tuple[Tensor, Tensor]:
        return self.loss_fn(*minibatch)


class MinibatchUpdate:
    """``update(sums, *minibatch)``: one optimizer step on ``loss_fn(*minibatch)``; adds [loss statistics,
    gradient norm per group] to ``sums`` in place, moves the groups' Polyak targets and returns the loss function's
    new state (``()`` when it has none).

    ``compile_note``: with it, the first call compiles the step with torch.compile (the note is printed first: the
    compile holds a progress bar still for a while); if compiling fails (e.g. no C++ compiler for inductor), a
    warning names ``option`` and training continues with the eager step. ``prepare()`` once per update pass (before
    the first minibatch; after a checkpoint was loaded it picks up the new optimizer state). ``compile_options``:
    inductor's options for this step's compile, e.g. ``{"cpp_wrapper": True}``."""

    def __init__(self, model: nn.Module, loss_fn: LossFn, groups: list[ParamGroup], compile_note: str | None = None,
                 option: str = "compile_loss", say: Callable[[str], None] | None = None,
                 compile_options: dict | None = None):
        self.model, self.loss_fn, self.groups = model, loss_fn, groups
        self.option, self.say = option, say or _note
        self._compile_note, self._compile_options = compile_note, compile_options or {}
        self._compiled: Callable[..., tuple[Tensor, ...]] | None = None
        self._inputs: tuple | None = None
        if compile_note is not None:
            self._loss_module = _LossModule(model, loss_fn)
            by_id = {id(p): name for name, p in self._loss_module.named_parameters()}
            missing = [p for g in groups for p in g.params if id(p) not in by_id]
            if missing:
                raise ValueError(f"MinibatchUpdate: {len(missing)} parameter(s) of the groups are not in the model")
            self._names = [[by_id[id(p)] for p in g.params] for g in groups]
            self._grad_fn = grad_and_value(self._functional_loss, has_aux=True)

    @property
    def compiled(self) -> bool:
        return self._compiled is not None

    def __call__(self, sums: Tensor, *minibatch: Tensor) -> tuple[Tensor, ...]:
        if self._compiled is not None:
            return self._compiled(self._inputs or self.prepare(), sums, *minibatch)
        if self._compile_note is not None:
            return self._compile_on_first_call(sums, *minibatch)
        return self.eager(sums, *minibatch)

    def prepare(self) -> tuple:
        """The tensors a compiled step reads, gathered once per update pass: parameters and optimizer state are
        graph inputs (a loaded checkpoint replaces them), and so are the learning rates, as tensors (a schedule
        changes them)."""
        if self._compile_note is None:
            return ()
        for group in self.groups:
            optim.init_state(group.optimizer)
        # flat lists of tensors: cheap guards for torch.compile (no lookups in the optimizer's tensor-keyed dict)
        self._inputs = tuple(
            (list(g.params), optim.state_lists(g.optimizer),
             torch.tensor(float(g.optimizer.param_groups[0]["lr"]), device=g.params[0].device), list(g.target or []))
            for g in self.groups)
        return self._inputs

    # --- eager: loss.backward(), clip_grad_norm_, optimizer.step() ---------------------------------------------
    def eager(self, sums: Tensor, *minibatch: Tensor) -> tuple[Tensor, ...]:
        loss, stats, new_state = _unpack(self.loss_fn(*minibatch))
        for group in self.groups:
            group.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norms = []
        for group in self.groups:  # clip_grad_norm_ in two parts, so that an unclipped group is not scaled by 1
            norm = nn.utils.get_total_norm([p.grad for p in group.params if p.grad is not None], foreach=True)
            if group.max_grad_norm > 0:
                nn.utils.clip_grads_with_norm_(group.params, group.max_grad_norm, norm, foreach=True)
            norms.append(norm)
        for group in self.groups:
            group.optimizer.step()
        with torch.no_grad():
            for group in self.groups:
                if group.target is not None:
                    torch._foreach_lerp_(group.target, group.params, group.tau)
        sums.add_(torch.cat([stats.detach(), torch.stack(norms)]))
        return tuple(value.detach() for value in new_state)

    # --- compiled: the same step as one functional graph ------------------------------------------------------
    def _functional_loss(self, params: tuple[Tensor, ...], *minibatch: Tensor) -> tuple[Tensor, tuple]:
        names = [name for group in self._names for name in group]
        loss, stats, new_state = _unpack(functional_call(self._loss_module, dict(zip(names, params)), minibatch))
        return loss, (stats.detach(), tuple(value.detach() for value in new_state))

    def _functional_step(self, inputs: tuple, sums: Tensor, *minibatch: Tensor) -> tuple[Tensor, ...]:
        grads, (_, (stats, new_state)) = self._grad_fn(
            tuple(p.detach() for params, _, _, _ in inputs for p in params), *minibatch)
        norms, start = [], 0
        with torch.no_grad():
            for group, (params, state, lr, target) in zip(self.groups, inputs):
                group_grads = list(grads[start:start + len(params)])
                start += len(params)
                # clip_grad_norm_'s math: scale by max_norm / (norm + 1e-6) when that is below 1. The norm of each
                # gradient as a reduction inductor generates (it has no kernel of its own for _foreach_norm)
                norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in group_grads]))
                if group.max_grad_norm > 0:
                    torch._foreach_mul_(group_grads, torch.clamp(group.max_grad_norm / (norm + 1e-6), max=1.0))
                optim.functional_step(group.optimizer, params, group_grads, state, lr)
                if target:
                    torch._foreach_lerp_(target, params, group.tau)
                norms.append(norm)
            sums.add_(torch.cat([stats, torch.stack(norms)]))
        return new_state

    def _compile_on_first_call(self, sums: Tensor, *minibatch: Tensor) -> tuple[Tensor, ...]:
        self.say(self._compile_note)  # the compile holds a progress bar still for a while: say why, once
        start = time.perf_counter()
        compiled = torch.compile(_own_compile_cache(self._functional_step),
                                 options={"guard_filter_fn": _keep_tensor_guards, **self._compile_options})
        try:
            new_state = compiled(self.prepare(), sums, *minibatch)
        except Exception as error:  # noqa: BLE001 -- any compiler failure; the eager path is the same math
            warnings.warn(f"{self.option}: torch.compile failed ({type(error).__name__}: {error}); training "
                          f"continues uncompiled (set --{self.option} false to skip the attempt)", stacklevel=3)
            self._compile_note = None
            return self.eager(sums, *minibatch)
        self._compiled = compiled
        self.say(f"compiled in {time.perf_counter() - start:.0f} s")
        return new_state


def _note(message: str) -> None:
    """A line on stderr that leaves a running progress bar intact."""
    from tqdm import tqdm

    tqdm.write(message, file=sys.stderr)


def _unpack(out: tuple) -> tuple[Tensor, Tensor, tuple[Tensor, ...]]:
    """A loss function's (loss, stats[, new state]) as (loss, stats, new state or ())."""
    loss, stats, *new_state = out
    return loss, stats, tuple(new_state[0]) if new_state else ()


def _keep_tensor_guards(guards: list) -> list[bool]:
    """torch.compile's guard filter: the tensor checks (parameters included) only; see the module docstring."""
    return [guard.guard_type == "TENSOR_MATCH" for guard in guards]


def _own_compile_cache(method: Callable) -> Callable:
    """``method`` with a fresh copy of its function's code object: torch.compile caches graphs (and counts
    recompiles) per code object, so this instance's graphs are its own."""
    fn = method.__func__
    own = types.FunctionType(fn.__code__.replace(), fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__)
    return types.MethodType(own, method.__self__)
