"""CTEN's training step: the original video plus the keyframe and context views of temporal erasing (Sec. 3.3).

Per iteration (paper Eqs. 8-12):
  1. x_o: the frozen visual backbone gives F_v (no gradient); the network gives logits and the temporal
     attention of each modality.
  2. The erasing rule splits the T segments into keyframes and context (models/erasing.py).
  3. x_k, x_l: each view is re-sampled into T segments over its kept frames. `resample` (default, the paper)
     reads the new snippets (parallel JPEG decoding through the dataset's `read_frames`) and runs the backbone on
     them; `reuse` re-indexes the original pass's segment features instead (one backbone pass per iteration; a
     shortcut that changes what the network sees). Audio is erased alike: each view segment takes the 1-s
     window of the original segment its snippet comes from.
  4. L = CE(x_o) + CE(x_k) + CE(x_l) (Eq. 12; `mean` is the official code's reduction).
Only x_o is used at inference.
"""
from typing import Callable, Optional

import torch

from core.engine import unwrap
from models.erasing import keyframe_mask, resample_view, reuse_view


def source_segments(frame_indices: torch.Tensor, seg_bounds: torch.Tensor, keep: torch.Tensor, n_frames: int) -> torch.Tensor:
    """The original segment each view snippet comes from: the first kept segment whose padded span
    [start, end) holds a position p with p % n_frames == the snippet's centre frame.
    frame_indices (T', L), seg_bounds (T, 2), keep (T,) bool -> (T',) long."""
    centre = frame_indices[:, frame_indices.shape[1] // 2]  # (T',)
    start, length = seg_bounds[:, 0], seg_bounds[:, 1] - seg_bounds[:, 0]  # (T,)
    inside = torch.remainder(centre[:, None] - start[None, :], n_frames) < length[None, :]  # (T', T)
    inside &= keep[None, :]
    fallback = keep.float().argmax()  # never hit when the view was built from `keep`; keeps the result defined
    return torch.where(inside.any(dim=1), inside.float().argmax(dim=1), fallback)


class CTENMethod:
    curve_names = ("att_v", "att_a")

    def __init__(self, criterion: Callable, erase: bool = True, theta: float = 0.7, rule: str = "paper",
                 views: str = "resample", reduction: str = "sum",
                 read_frames: Optional[Callable] = None):
        if erase and views == "resample" and read_frames is None:
            raise ValueError("erase-views 'resample' needs the training dataset's read_frames")
        self.criterion, self.erase, self.theta, self.rule = criterion, erase, theta, rule
        self.views, self.reduction, self.read_frames = views, reduction, read_frames

    def predict(self, model, batch: dict) -> dict:
        return model(video=batch.get("video"), audio=batch.get("audio"), visual_feats=batch.get("visual_feats"))

    def train_step(self, model, batch: dict, epoch: int):
        net = unwrap(model)
        labels = batch["label"]
        fv = batch.get("visual_feats")
        if fv is None and net.uses_visual:
            with torch.no_grad():
                fv = net.visual_features(batch["video"])  # (B, T, D), frozen backbone
        audio = batch.get("audio") if net.uses_audio else None
        out = model(visual_feats=fv, audio=audio)  # x_o through the (possibly DDP-wrapped) model
        loss_o = self.criterion(out["logits"], labels)
        logs = {"loss_o": loss_o.item(), "acc_o": _acc(out["logits"], labels)}
        if not self.erase:
            return loss_o, logs

        keep = keyframe_mask(out.get("att_v", None) if net.uses_visual else None,
                             out.get("att_a", None) if net.uses_audio else None,
                             theta=self.theta, rule=self.rule, joint=out.get("att"))  # (B, T) bool
        fv_k, a_k = self._view(net, batch, fv, audio, keep)
        fv_l, a_l = self._view(net, batch, fv, audio, ~keep)
        cat = lambda x, y: None if x is None else torch.cat([x, y])
        out_v = net(visual_feats=cat(fv_k, fv_l), audio=cat(a_k, a_l))  # both views in one pass; DDP syncs on backward
        logits_k, logits_l = out_v["logits"].chunk(2)
        loss_k, loss_l = self.criterion(logits_k, labels), self.criterion(logits_l, labels)
        loss = loss_o + loss_k + loss_l  # Eq. 12
        if self.reduction == "mean":
            loss = loss / 3
        logs.update(loss_k=loss_k.item(), loss_l=loss_l.item(), acc_k=_acc(logits_k, labels),
                    acc_l=_acc(logits_l, labels), keyframe_fraction=keep.float().mean().item())
        return loss, logs

    def _view(self, net, batch, fv, audio, keep):
        """Visual features (B, T, D) and audio (B, T, F, M) of the view that keeps `keep` (B, T)."""
        B, T = keep.shape
        if self.views == "reuse" or batch.get("video") is None:
            idx = reuse_view(keep)  # (B, T) original segment per view segment
            gather = lambda x: None if x is None else torch.stack([x[b, idx[b]] for b in range(B)])
            return gather(fv), gather(audio)
        frames, sources = [], []
        for b in range(B):
            n = int(batch["n_frames"][b])
            fi = resample_view(batch["seg_bounds"][b].cpu(), keep[b].cpu(), n, T,
                               batch["frame_indices"].shape[-1], training=True)  # (T, L)
            frames.append(self.read_frames(int(batch["index"][b]), fi, batch["aug"][b].cpu()))
            sources.append(source_segments(fi, batch["seg_bounds"][b].cpu(), keep[b].cpu(), n))
        video = torch.stack(frames).to(keep.device, non_blocking=True)  # (B, T, 3, L, S, S) uint8
        fv_view = None
        if net.uses_visual:
            with torch.no_grad():
                fv_view = net.visual_features(video)
        a_view = None
        if audio is not None:
            src = torch.stack(sources).to(audio.device)
            a_view = torch.stack([audio[b, src[b]] for b in range(B)])
        return fv_view, a_view


def _acc(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return (logits.argmax(dim=1) == labels).float().mean().item()
