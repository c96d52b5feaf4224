"""Temporal erasing (paper Sec. 3.3, Eqs. 8-9) as pure functions: which segments are keyframes, and the `reuse`
shortcut's view index (the faithful views' frames are TSN-sampled by datasets/frames.py `erased_view_frames`).

Rules (`rule=`):
- `joint` (default): Eq. 8 per modality, then the paper's AND (Eq. 9) read as a per-segment minimum
  J = min(A*_v, A*_a), which is min-max normalised over T again (J*); keyframes are J* >= theta, context the
  complement. J* reaches 1 at the segment where the modalities agree most and 0 where they agree least, so for
  0 < theta <= 1 and T >= 2 every video has at least one keyframe and at least one context segment. When J is
  constant (no temporal preference, e.g. a dead ReLU attention) one segment drawn uniformly at random (from
  `generator`) is the keyframe. With one modality J = A*, i.e. the paper rule plus the constant-curve draw.
- `paper`: each attention is min-max normalised over T (Eq. 8); a segment is a keyframe when every given
  attention is >= theta (Eq. 9 literally: A*_v >= theta AND A*_a >= theta; one modality uses its own); the context
  view is the complement. With two modalities most videos have no keyframe at all (docs/divergences.md).
- `official`: on the raw attention, keyframes are A > 0.7 max + 0.3 min (theta max + (1 - theta) min), context is
  A < that threshold, so a segment exactly at the threshold belongs to neither view (the release uses the single
  joint attention, which CTEN's joint head returns as both att_v and att_a; several attentions must all agree).

A view whose mask is empty (`paper`/`official`: e.g. every segment is a keyframe, so the context is empty) falls
back to the whole video: `erased_view_frames` and `reuse_view` treat an all-False mask as all-True. The masks themselves are returned
unchanged so callers can count such fallbacks.
"""
import torch


FLAT_RTOL = 1e-6  # a curve whose span is at most this share of its largest magnitude counts as constant


def minmax_normalize(att: torch.Tensor) -> torch.Tensor:
    """(..., T) -> (..., T), Eq. 8: (A - min) / (max - min) over T. The project's one min-max normalisation
    (erasing here, detection in core/detection.py).

    A constant attention (max - min <= FLAT_RTOL * max |A|, float noise included) maps to all ones: every segment
    equals the maximum, and a segment equal to the maximum always maps to 1. Never NaN.
    """
    lo = att.amin(dim=-1, keepdim=True)
    span = att.amax(dim=-1, keepdim=True) - lo
    flat = span <= FLAT_RTOL * att.abs().amax(dim=-1, keepdim=True)
    return torch.where(flat, torch.ones_like(att), (att - lo) / span.clamp_min(torch.finfo(att.dtype).tiny))


ERASE_RULES = ("joint", "paper", "official")


def joint_keyframes(atts: list[torch.Tensor], theta: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """The `joint` rule: attentions (B, T) each -> keyframes bool (B, T); context is the complement."""
    agree = torch.stack([minmax_normalize(a) for a in atts]).amin(dim=0)  # (B, T), Eq. 9's AND as a minimum
    key = minmax_normalize(agree) >= theta  # (B, T)
    flat = agree.amax(dim=-1) == agree.amin(dim=-1)  # (B,) no temporal preference
    if flat.any():
        draw = torch.randint(agree.shape[-1], (int(flat.sum()),), generator=generator).to(agree.device)
        key[flat] = torch.nn.functional.one_hot(draw, agree.shape[-1]).bool()
    return key


def view_stats(keyframes: torch.Tensor, context: torch.Tensor) -> dict[str, float]:
    """keyframes, context bool (B, T) -> the share of videos whose keyframe / context view is empty (and so falls
    back to the whole video) and the mean share of keyframe segments."""
    return {"empty_key_views": (~keyframes.any(dim=1)).float().mean().item(),
            "empty_context_views": (~context.any(dim=1)).float().mean().item(),
            "keyframe_fraction": keyframes.float().mean().item()}


def erasing_masks(atts: list[torch.Tensor], theta: float = 0.7, rule: str = "joint",
                  generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Attentions (B, T) of the modalities taking part -> (keyframes, context), bool (B, T) each (Eq. 9).
    generator: the random draw of the `joint` rule's constant-curve case."""
    if not atts:
        raise ValueError("erasing needs at least one attention map")
    if rule == "joint":
        key = joint_keyframes(atts, theta, generator)
        return key, ~key
    if rule == "paper":
        key = torch.stack([minmax_normalize(a) >= theta for a in atts]).all(dim=0)
        return key, ~key
    if rule == "official":
        thresholds = [theta * a.amax(dim=-1, keepdim=True) + (1 - theta) * a.amin(dim=-1, keepdim=True) for a in atts]
        key = torch.stack([a > th for a, th in zip(atts, thresholds)]).all(dim=0)
        context = torch.stack([a < th for a, th in zip(atts, thresholds)]).all(dim=0)
        return key, context
    raise ValueError(f"erasing rule {rule!r} is not one of {ERASE_RULES}")


def reuse_view(keep: torch.Tensor) -> torch.Tensor:
    """keep (B, T) bool -> index (B, T) int64 into the original pass's T segments (the `reuse` shortcut).

    A shortcut, not the paper's view: instead of re-sampling frames from the kept segments, the view is rebuilt from
    the original pass's per-segment features, the m kept segments stretched to T by nearest index (output j takes
    kept segment floor((j + 0.5) m / T)). The network sees repeated copies of the same snippets rather than new
    snippets drawn across the kept span. An empty row means the whole video (the identity index).
    """
    b, t = keep.shape
    keep = keep | ~keep.any(dim=1, keepdim=True)
    m = keep.sum(dim=1, keepdim=True)  # (B, 1)
    order = torch.sort((~keep).to(torch.int8), dim=1, stable=True).indices  # kept segments first, in time order
    pick = ((torch.arange(t, device=keep.device) * 2 + 1) * m) // (2 * t)  # (B, T) positions among the kept
    return order.gather(1, pick)
