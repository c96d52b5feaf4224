"""Exponential moving average of a model's weights (MART stage 2 evaluates and saves the EMA copy)."""
import copy
import math

import torch
from torch import nn


def ema_decay(updates: int, decay: float, warmup: float) -> float:
    """d = decay * (1 - exp(-updates / warmup)); warmup <= 0 means a constant decay."""
    if warmup <= 0:
        return decay
    return decay * (1.0 - math.exp(-updates / warmup))


class ModelEMA:
    """Keeps `module`, an EMA copy of a model: p_ema <- d p_ema + (1 - d) p; buffers are copied."""

    def __init__(self, model: nn.Module, decay: float = 0.999, warmup: float = 2000.0):
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay, self.warmup, self.updates = decay, warmup, 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = ema_decay(self.updates, self.decay, self.warmup)
        ema_state = self.module.state_dict()
        for name, value in model.state_dict().items():
            target = ema_state[name]
            if value.dtype.is_floating_point:
                target.mul_(d).add_(value.detach(), alpha=1.0 - d)
            else:
                target.copy_(value)

    def state_dict(self) -> dict:
        return {"module": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = state["updates"]
