"""The optimizer step inside backward (issue 24, item 2): each parameter's Adam update is applied as soon as
its gradient is complete, and the gradient is freed at once, so the generator's gradients never all
coexist (for pix2pixHD's 182 M-parameter generator that is 0.73 GB of the peak).

How: a ``register_post_accumulate_grad_hook`` on every parameter calls ``torch.optim.adam.adam`` (the
functional form ``Adam.step`` calls) on that one parameter with the optimizer's own state
(``exp_avg``, ``exp_avg_sq``, ``step``, created as ``Adam`` creates them) and its group's settings
(lr as the schedule set it, betas, eps, weight decay, fused / foreach), then sets ``grad = None``. Adam
is elementwise, so a step per parameter is the same maths as one step over all of them (tested against
the plain path to 1e-6, tests/models/test_step_in_backward.py); the optimizer's ``state_dict`` keeps its
layout, so checkpoints and resume are unchanged. The module still calls ``optimizer.step()`` afterwards:
with every gradient already None it changes nothing, and Lightning counts the step (``global_step``).

The Adam state (``exp_avg``, ``exp_avg_sq``, ``step``) of every parameter that trains is made when the
helper is installed, before the first forward, as Adam makes it at its first step (zeros, step 0; a state
already there, as after a resume, is kept): made during the first backward instead, the 1.46 GB of
moments land among that iteration's activations and gradients and fragment the heap, which then stays
larger (issue 24). :func:`make_adam_state` does the same for any other Adam (the discriminator's).

Where it does not apply (a warning says so and the plain step runs): optimizers other than Adam / AdamW,
amsgrad, a gradient scaler (``precision=16-mixed``: the step must wait for the unscale), and more than one
process (DDP all-reduces gradients in its own hooks after accumulation).
"""

from __future__ import annotations

import logging
from contextlib import contextmanager

import torch
from torch.optim import Adam, AdamW
from torch.optim import adam as adam_functional

log = logging.getLogger(__name__)


def unsupported_reason(optimizer, world_size: int = 1, scaler: bool = False) -> str | None:
    """Why the step cannot run inside backward for ``optimizer`` (None: it can)."""
    if not isinstance(optimizer, (Adam, AdamW)):
        return f"{type(optimizer).__name__} is not Adam / AdamW"
    if any(group.get("amsgrad") for group in optimizer.param_groups):
        return "amsgrad is on"
    if any(group.get("differentiable") or group.get("capturable") for group in optimizer.param_groups):
        return "a differentiable or capturable Adam"
    if scaler:
        return "a gradient scaler (precision=16-mixed) unscales after backward"
    if world_size > 1:
        return "more than one process (DDP reduces gradients after accumulation)"
    return None


def make_adam_state(optimizer: torch.optim.Optimizer) -> None:
    """Make the state Adam / AdamW makes at its first step, now, for every parameter that trains and has
    none (module notes); other optimizers are left alone. The same zeros and step count, so the same maths."""
    if not isinstance(optimizer, (Adam, AdamW)) or any(group.get("amsgrad") for group in optimizer.param_groups):
        return
    for group in optimizer.param_groups:
        for p in group["params"]:
            if p.requires_grad:
                adam_state(optimizer, p, group)


def adam_state(optimizer: torch.optim.Optimizer, p: torch.Tensor, group: dict) -> dict:
    """``optimizer.state[p]``, made as torch.optim.Adam._init_group makes it where it is empty."""
    state = optimizer.state[p]
    if not state:
        fused = bool(group.get("fused"))
        dtype = torch.float32 if fused or p.dtype != torch.float64 else torch.float64
        state["step"] = torch.zeros((), dtype=dtype, device=p.device) if fused else torch.tensor(0.0, dtype=dtype)
        state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
    return state


class StepInBackward:
    """Per-parameter Adam steps during backward for the parameters of ``optimizer`` (module notes).
    The hooks act only inside :meth:`during`; :meth:`remove` takes them off."""

    def __init__(self, optimizer: torch.optim.Optimizer):
        reason = unsupported_reason(optimizer)
        if reason:
            raise ValueError(f"the optimizer step cannot run inside backward: {reason}")
        self.optimizer = optimizer
        self.active = False
        self.group_of = {p: group for group in optimizer.param_groups for p in group["params"]}
        self.handles = [p.register_post_accumulate_grad_hook(self._step) for p in self.group_of]
        make_adam_state(optimizer)  # before the first forward: the moments below the transients (module notes)

    @torch.no_grad()
    def _step(self, p: torch.Tensor) -> None:
        if not self.active or p.grad is None:
            return
        group = self.group_of[p]
        state = adam_state(self.optimizer, p, group)
        beta1, beta2 = group["betas"]
        extra = {"decoupled_weight_decay": isinstance(self.optimizer, AdamW) or bool(group.get("decoupled_weight_decay", False))}
        adam_functional.adam(
            [p], [p.grad], [state["exp_avg"]], [state["exp_avg_sq"]], [], [state["step"]],
            foreach=group.get("foreach"), capturable=False, differentiable=False, fused=group.get("fused"),
            grad_scale=None, found_inf=None, has_complex=torch.is_complex(p), amsgrad=False, beta1=beta1, beta2=beta2,
            lr=group["lr"], weight_decay=group["weight_decay"], eps=group["eps"], maximize=group.get("maximize", False), **extra,
        )
        p.grad = None

    @contextmanager
    def during(self):
        """Steps run in the backward passes inside this block."""
        self.active = True
        try:
            yield
        finally:
            self.active = False

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []
