"""CTEN's training step: the original video plus the keyframe and context views of temporal erasing (Sec. 3.3).

Per iteration (paper Eqs. 8-12):
  1. x_o: the frozen visual backbone gives F_v once (no gradient; or the feature cache gives it); the network
     gives logits and the temporal attention of each modality.
  2. The erasing rule splits the T segments into keyframes and context (models/erasing.py); the logs carry the
     share of videos whose keyframe / context view is empty (`empty_key_views`, `empty_context_views`) and the
     mean share of keyframe segments (`keyframe_fraction`), averaged over the epoch by the engine.
  3. x_k, x_l: each view is re-sampled into T segments over its kept frames. `resample` (default, the paper)
     reads the new snippets (parallel JPEG decoding through the dataset's `read_frames`) and runs the backbone on
     them; with a feature cache the new snippets' features come from the cache's temporal grid; `reuse`
     re-indexes the original pass's segment features (one backbone pass per iteration; a shortcut that changes
     what the network sees). Audio is erased alike: each view segment takes the 1-s window of the original
     segment its snippet comes from (the official rule never erases audio).
  4. L = CE(x_o) + CE(x_k) + CE(x_l) (Eq. 12; `mean` is the official code's reduction).
The two views go through the heads as one batch of 2B. Only x_o is used at inference.
"""
from typing import Callable, Optional

import torch

from core.engine import unwrap
from models.erasing import erasing_masks, resample_view, reuse_view, view_stats


def source_segments(frame_indices: torch.Tensor, seg_bounds: torch.Tensor, keep: torch.Tensor, n_frames: int) -> torch.Tensor:
    """The original segment each view snippet comes from: the first kept segment whose padded span
    [start, end) holds a position p with p % n_frames == the snippet's centre frame.
    frame_indices (T', L), seg_bounds (T, 2), keep (T,) bool -> (T',) long."""
    centre = frame_indices[:, frame_indices.shape[1] // 2]  # (T',)
    start, length = seg_bounds[:, 0], seg_bounds[:, 1] - seg_bounds[:, 0]  # (T,)
    inside = torch.remainder(centre[:, None] - start[None, :], n_frames) < length[None, :]  # (T', T)
    inside &= keep[None, :]
    fallback = keep.float().argmax()  # not reached for views built from `keep`; keeps the result defined
    return torch.where(inside.any(dim=1), inside.float().argmax(dim=1), fallback)


class CTENMethod:
    curve_names = ("att_v", "att_a")  # seg_logits: per-segment class contributions, for detection

    def __init__(self, criterion: Callable, erase: bool = True, theta: float = 0.7, rule: str = "joint",
                 views: str = "resample", reduction: str = "sum", read_frames: Optional[Callable] = None,
                 grid_lookup: Optional[Callable] = None):
        """read_frames(index, frame_indices (T, L), aug) -> uint8 (T, 3, L, S, S): the training dataset's reader.
        grid_lookup(batch, b, frame_indices (T, L)) -> (T, D): features of new snippets from a feature cache."""
        if views not in ("resample", "reuse"):
            raise ValueError(f"erase views {views!r} is not 'resample' or 'reuse'")
        self.criterion, self.erase, self.theta, self.rule = criterion, erase, theta, rule
        self.views, self.reduction = views, reduction
        self.read_frames, self.grid_lookup = read_frames, grid_lookup

    def predict(self, model, batch: dict) -> dict:
        return model(video=batch.get("video"), audio=batch.get("audio"), visual_feats=batch.get("visual_feats"))

    def train_step(self, model, batch: dict, epoch: int):
        net = unwrap(model)
        labels = batch["label"]
        fv = batch.get("visual_feats")
        if fv is None and "v" in net.modalities:
            with torch.no_grad():
                fv = net.visual_features(batch["video"])  # (B, T, D), frozen backbone
        audio = batch["audio"] if "a" in net.modalities else None
        out = model(visual_feats=fv, audio=audio)  # x_o through the (possibly DDP-wrapped) model
        loss_o = self.criterion(out["logits"], labels)
        logs = {"loss_o": loss_o.item(), "acc_o": _acc(out["logits"], labels)}
        if not self.erase:
            return loss_o, logs

        atts = [out[f"att_{m}"].detach().float() for m in net.modalities]  # (B, T) each
        keyframes, context = erasing_masks(atts, self.theta, self.rule)  # Eq. 9
        fv_k, a_k = self._view(net, batch, fv, audio, keyframes)
        fv_l, a_l = self._view(net, batch, fv, audio, context)
        cat = lambda x, y: None if x is None else torch.cat([x, y])
        out_v = net(visual_feats=cat(fv_k, fv_l), audio=cat(a_k, a_l))  # DDP syncs all grads on the one backward
        logits_k, logits_l = out_v["logits"].chunk(2)
        loss_k, loss_l = self.criterion(logits_k, labels), self.criterion(logits_l, labels)
        loss = loss_o + loss_k + loss_l  # Eq. 12
        if self.reduction == "mean":
            loss = loss / 3
        logs.update(loss_k=loss_k.item(), loss_l=loss_l.item(), acc_k=_acc(logits_k, labels),
                    acc_l=_acc(logits_l, labels), **view_stats(keyframes, context))
        return loss, logs

    def _view(self, net, batch, fv, audio, keep):
        """Visual features (B, T, D) and audio (B, T, F, M) of the view made of the segments in `keep` (B, T);
        an empty row means the whole video."""
        B, T = keep.shape
        keep = keep | ~keep.any(dim=1, keepdim=True)
        erase_audio = self.rule != "official"
        if self.views == "reuse":
            idx = reuse_view(keep)  # (B, T) original segment per view segment
            gather = lambda x: None if x is None else x.gather(1, idx.view(B, T, *[1] * (x.dim() - 2)).expand_as(x))
            return gather(fv), gather(audio) if erase_audio else audio
        fvs, sources = [], []
        for b in range(B):
            n, sb, kb = int(batch["n_frames"][b]), batch["seg_bounds"][b].cpu(), keep[b].cpu()
            fi = resample_view(sb, kb, n, T, batch["frame_indices"].shape[-1], training=True)  # (T, L)
            sources.append(source_segments(fi, sb, kb, n))
            if fv is None:
                continue
            if self.grid_lookup is not None:
                fvs.append(self.grid_lookup(batch, b, fi))
            else:
                fvs.append(self.read_frames(int(batch["index"][b]), fi, batch["aug"][b].cpu()))
        fv_view = None
        if fvs:
            stacked = torch.stack(fvs).to(keep.device, non_blocking=True)
            if self.grid_lookup is not None:
                fv_view = stacked.to(fv.dtype)  # (B, T, D)
            else:
                with torch.no_grad():
                    fv_view = net.visual_features(stacked)  # uint8 (B, T, 3, L, S, S) -> (B, T, D)
        a_view = audio
        if audio is not None and erase_audio:
            src = torch.stack(sources).to(audio.device)  # (B, T)
            a_view = audio.gather(1, src.view(B, T, 1, 1).expand_as(audio))
        return fv_view, a_view


def _acc(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return (logits.argmax(dim=1) == labels).float().mean().item()
