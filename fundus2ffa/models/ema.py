"""Exponential moving average (EMA) of generator weights, for every GAN training procedure.

Why: the average of the generator's recent weights gives better and steadier outputs than the last
iterate; imaginaire (``ema: beta 0.9999, start_iteration``) and StyleGAN (half-life 10k images) sample
from it. None of the papers reproduced here uses it, so it is off by default (``model.ema.enabled``).

What: ``model.ema: {enabled, decay, start_step, every_n_steps}``. The copy follows the raw weights
exactly until ``start_step`` training batches (counted in batches, not in Lightning's
``global_step``, which counts one step per optimiser), then every ``every_n_steps`` batches
``ema <- decay * ema + (1 - decay) * raw`` (with ``every_n_steps = k`` the effective per-batch decay
is ``decay ** (1 / k)``). Buffers (BatchNorm running statistics) are copied, not averaged, as
StyleGAN2-ADA does. The update is a parameter lerp after the optimiser steps: no forward pass.

The copies are submodules (``ema.<name>.*`` in the state dict, parameters frozen), so checkpoints
carry them and a resumed run continues the same average; the batch counter is a buffer too.
"""

import copy
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from fundus2ffa.config import settings_from_config
from fundus2ffa.errors import ConfigError


@dataclass(frozen=True)
class EMASettings:
    enabled: bool = False
    decay: float = 0.999
    start_step: int = 1000
    every_n_steps: int = 1

    def __post_init__(self):
        if not 0.0 <= float(self.decay) < 1.0:
            raise ConfigError(f"model.ema.decay must lie in [0, 1) (e.g. 0.999), got {self.decay}")
        if int(self.start_step) < 0:
            raise ConfigError(f"model.ema.start_step must be >= 0 training batches, got {self.start_step}")
        if int(self.every_n_steps) < 1:
            raise ConfigError(f"model.ema.every_n_steps must be at least 1, got {self.every_n_steps}")

    @classmethod
    def from_config(cls, node: Mapping | None) -> "EMASettings":
        return settings_from_config(cls, node, "model.ema")


def frozen_copy(net: nn.Module) -> nn.Module:
    """A deep copy of ``net`` (the module under torch.compile's wrapper) with parameters frozen."""
    twin = copy.deepcopy(getattr(net, "_orig_mod", net))
    for p in twin.parameters():
        p.requires_grad_(False)
    return twin


@torch.no_grad()
def ema_update(ema: nn.Module, raw: nn.Module, decay: float) -> None:
    """``ema <- decay * ema + (1 - decay) * raw`` for parameters (decay 0 copies); buffers copied."""
    raw = getattr(raw, "_orig_mod", raw)
    ema_params, raw_params = list(ema.parameters()), [p.detach() for p in raw.parameters()]
    if decay == 0.0:
        torch._foreach_copy_(ema_params, raw_params)
    else:
        torch._foreach_lerp_(ema_params, raw_params, 1.0 - decay)
    for e, r in zip(ema.buffers(), raw.buffers()):
        e.copy_(r)
