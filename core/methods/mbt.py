"""Supervised training of the audio-visual bottleneck transformer (MART's stage 2): PCCE on both heads."""
from typing import Callable, Dict

import torch

DEGREE_SOURCES = (("degree_v", "seg_logits_v"), ("degree_a", "seg_logits_a"), ("degree_dec", "dec_logits"))


def add_degree_curves(out: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Temporal degree of the predicted emotion: per segment, the probability of the video's predicted class
    under each per-segment head present in `out` (B, T, C) -> curve (B, T): the visual and audio heads, and
    MART's decoder ('dec_logits') when present."""
    pred = out["logits"].argmax(dim=1)  # (B,)
    for name, key in DEGREE_SOURCES:
        if key in out:
            probs = out[key].float().softmax(dim=-1)  # (B, T, C)
            out[name] = probs.gather(2, pred[:, None, None].expand(-1, probs.shape[1], 1)).squeeze(2)  # (B, T)
    return out


class MBTMethod:
    curve_names = ("degree_v", "degree_a")

    def __init__(self, criterion: Callable):
        self.criterion = criterion

    def predict(self, model, batch: dict) -> dict:
        return add_degree_curves(model(video=batch["video"], audio=batch["audio"]))

    def train_step(self, model, batch: dict, epoch: int):
        out = model(video=batch["video"], audio=batch["audio"])
        labels = batch["label"]
        loss_v = self.criterion(out["logits_v"], labels)
        loss_a = self.criterion(out["logits_a"], labels)
        acc = (out["logits"].argmax(dim=1) == labels).float().mean().item()
        return loss_v + loss_a, {"loss_v": loss_v.item(), "loss_a": loss_a.item(), "acc": acc}
