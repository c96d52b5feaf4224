"""MART stage 1 (Zhang et al., CVPR 2024): masked affective representation learning around the MBT backbone.

Pieces (the losses are computed by `core/methods/mart.py`; this file only returns tensors):
    mask_ratio, mask_counts, guided_attention, attention_mask   attention-guided masking (pure functions)
    patchify_tubelets, tubelet_targets                          pixel targets of the masked tubelets
    MaskedDecoder        light transformer decoder: pixels of every tubelet + a per-segment emotion distribution
    ComplementaryLearning  temporal affective complementary learning (TACL): text tokens query the visual
                         and the audio tokens with cross-attention + MLP; pooled text-aligned sequences,
                         auxiliary logits, text-to-token attention and the modality-specific remainders
    MART                 one module holding the MBT, the decoder, TACL and the text encoder, so that one
                         optimiser over MART.parameters() trains every part (the official release built its
                         optimiser before its wrapper, so the decoder and TACL never trained)

Design decisions of ours (the paper body is not available; see docs/mart_stage1.md):
- The masking attention comes from a separate pass on the unmasked video (the EMA teacher's `guide`),
  and the student then sees the masked video: masked tubelets are replaced by the backbone's learnt mask
  token at its input (SimMIM-style; the decoder sees every encoder output token).
- Both attention maps are renormalised over the N patches before mixing (the MBT's CLS attention is a
  softmax over CLS, patches and bottleneck tokens).
- TACL's text-aligned sequence has no residual from the text query (it would give both modalities the
  same text component and make the InfoNCE pull trivial).
"""
import math
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import torch
import torch.nn as nn
from timm.layers import Mlp
from timm.models.vision_transformer import Block

from models.pretrained import CheckpointError
from models.video_vit import LayerNorm6, init_vit_weights, sinusoid_table

_EPS_COUNT = 1e-6  # guards floor(n * ratio) against float error (int(100 * 0.29) == 28)


# ---------------------------------------------------------------------------------- masking


def mask_ratio(epoch: int, epochs: int, start: float = 0.1, growth: float = 0.8, cap: float = 0.5) -> float:
    """Share of tokens masked at `epoch` (0-based) of `epochs`: start + growth * min(cap, epoch / epochs)."""
    if epochs <= 0:
        raise ValueError(f"the number of stage-1 epochs must be positive, got {epochs}")
    return start + growth * min(cap, epoch / epochs)


def mask_counts(n_tokens: int, ratio: float, hint_ratio: float = 0.1, hint_pool: float = 0.1) -> Tuple[int, int, int]:
    """(n_top, n_hint, n_pool) for one segment of n_tokens tokens.

    n_top = floor(ratio * N) most-attended tokens are masked; then n_hint = floor(hint_ratio * n_top) of them,
    drawn uniformly among the n_pool = min(floor(hint_pool * N), n_top) most attended, are revealed again
    (AttMask-Hints: the official release reveals floor(0.1 * ratio * N) tokens drawn from the top 10 %).
    A masked segment ends with n_top - n_hint masked tokens.
    """
    n_top = math.floor(n_tokens * ratio + _EPS_COUNT)
    n_pool = min(math.floor(n_tokens * hint_pool + _EPS_COUNT), n_top)
    n_hint = min(math.floor(n_top * hint_ratio + _EPS_COUNT), n_pool)
    return n_top, n_hint, n_pool


def guided_attention(cls_attn: torch.Tensor, text_attn: torch.Tensor, lam: float = 0.9) -> torch.Tensor:
    """lam * CLS-to-patch attention + (1 - lam) * text-to-visual attention, each renormalised over patches.

    cls_attn, text_attn: (..., N) non-negative. Returns float (..., N), summing to 1 over N.
    """
    def over_patches(a):
        a = a.float()
        return a / a.sum(dim=-1, keepdim=True).clamp_min(1e-12)
    return lam * over_patches(cls_attn) + (1.0 - lam) * over_patches(text_attn)


def attention_mask(attn: torch.Tensor, ratio: float, hint_ratio: float = 0.1, hint_pool: float = 0.1,
                   no_mask_prob: float = 0.5, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Attention-guided token mask of each segment: attn (..., N) -> bool (..., N), True = masked.

    Counts follow `mask_counts`; then each segment independently is left entirely unmasked with probability
    `no_mask_prob`. Random draws come from `generator` (a CPU generator; the global CPU RNG when None), so the
    mask does not depend on the device.
    """
    shape, n = attn.shape, attn.shape[-1]
    scores = attn.detach().reshape(-1, n).float()
    rows = scores.shape[0]
    n_top, n_hint, n_pool = mask_counts(n, ratio, hint_ratio, hint_pool)
    order = scores.argsort(dim=1, descending=True)  # (M, N) most attended first
    mask = torch.zeros(rows, n, dtype=torch.bool, device=attn.device)
    mask.scatter_(1, order[:, :n_top], True)
    if n_hint > 0:
        pick = torch.rand(rows, n_pool, generator=generator).argsort(dim=1)[:, :n_hint].to(attn.device)
        mask.scatter_(1, order.gather(1, pick), False)
    unmasked = (torch.rand(rows, generator=generator) < no_mask_prob).to(attn.device)
    mask[unmasked] = False
    return mask.view(shape)


# ---------------------------------------------------------------------------------- reconstruction targets


def patchify_tubelets(video: torch.Tensor, tubelet: int = 2, patch: int = 16) -> torch.Tensor:
    """(B, T, 3, L, S, S) -> (B, T, N, tubelet * patch * patch, 3).

    Tokens in (t, h, w) order, the order of the ViT's Conv3d patch embedding; pixels inside a token in
    (frame, row, column) order, channels last.
    """
    B, T, C, L, H, W = video.shape
    if L % tubelet or H % patch or W % patch:
        raise ValueError(f"video segments of {L} x {H} x {W} do not split into {tubelet} x {patch} x {patch} tubelets")
    x = video.reshape(B, T, C, L // tubelet, tubelet, H // patch, patch, W // patch, patch)
    x = x.permute(0, 1, 3, 5, 7, 4, 6, 8, 2)  # (B, T, t, h, w, p0, p1, p2, C)
    return x.reshape(B, T, -1, tubelet * patch * patch, C)


def tubelet_targets(video: torch.Tensor, tubelet: int = 2, patch: int = 16, eps: float = 1e-6) -> torch.Tensor:
    """Reconstruction targets: uint8 (B, T, 3, L, S, S) -> float (B, T, N, tubelet * patch * patch * 3).

    Pixels in [0, 1], each channel of each tubelet normalised by its own mean and (unbiased) std + eps over
    the tubelet's pixels (VideoMAE's normalised-pixel target, as in the official MART training loop);
    the last axis is (frame, row, column, channel).
    """
    x = patchify_tubelets(video.float() / 255.0, tubelet, patch)  # (B, T, N, P, 3)
    x = (x - x.mean(dim=-2, keepdim=True)) / (x.var(dim=-2, unbiased=True, keepdim=True).sqrt() + eps)
    return x.flatten(-2)


# ---------------------------------------------------------------------------------- decoder


@dataclass(frozen=True)
class DecoderConfig:
    """The light decoder; the defaults are MART's (8 blocks, width 512, 16 heads)."""
    width: int = 512
    depth: int = 8
    num_heads: int = 16
    mlp_ratio: float = 4.0


class MaskedDecoder(nn.Module):
    """Encoder patch tokens -> reconstructed tubelet pixels and a per-segment emotion prediction.

    in_dim: encoder width; num_patches: N tokens per segment; patch_dim: pixels per tubelet
    (tubelet * patch * patch * 3). Fixed sinusoidal positions; timm blocks.
    """

    def __init__(self, in_dim: int, num_patches: int, patch_dim: int, n_classes: int,
                 cfg: DecoderConfig = DecoderConfig()):
        super().__init__()
        self.in_dim, self.num_patches, self.patch_dim = in_dim, num_patches, patch_dim
        self.embed = nn.Linear(in_dim, cfg.width)
        self.register_buffer("pos_embed", sinusoid_table(num_patches, cfg.width)[None], persistent=False)
        self.blocks = nn.ModuleList([Block(cfg.width, cfg.num_heads, mlp_ratio=cfg.mlp_ratio, qkv_bias=True,
                                           norm_layer=LayerNorm6) for _ in range(cfg.depth)])
        self.norm = LayerNorm6(cfg.width)
        self.pixels = nn.Linear(cfg.width, patch_dim)
        self.emotion = nn.Linear(cfg.width, n_classes)
        self.apply(init_vit_weights)

    def forward(self, tokens: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """tokens (M, N, D) -> pixels (M, N, patch_dim), emotion logits (M, C)."""
        x = self.embed(tokens) + self.pos_embed.to(tokens.dtype)
        for blk in self.blocks:
            x = blk(x)
        x = self.norm(x)
        return self.pixels(x), self.emotion(x.mean(dim=1))


# ---------------------------------------------------------------------------------- complementary learning


class TextAlignedBranch(nn.Module):
    """Text tokens query one modality's tokens: 8-head cross-attention, then an MLP (pre-norm, residual on the
    attention output only), and an auxiliary classifier on the pooled result."""

    def __init__(self, dim: int, n_classes: int, num_heads: int = 8, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm_kv = LayerNorm6(dim)
        self.attn = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.norm_mlp = LayerNorm6(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.norm_head = LayerNorm6(dim)
        self.head = nn.Linear(dim, n_classes)

    def forward(self, text: torch.Tensor, text_valid: torch.Tensor, tokens: torch.Tensor) -> Dict[str, torch.Tensor]:
        """text (M, Lt, D) normalised queries, text_valid (M, Lt) bool, tokens (M, N, D).

        Returns 'aligned' (M, D): the text-aligned sequence pooled over the valid text tokens; 'attn' (M, N):
        text-to-token attention averaged over heads and valid text tokens (sums to 1); 'remainder' (M, D):
        the mean token minus the attention-weighted mean token (what the text does not point at).
        """
        kv = self.norm_kv(tokens)
        out, weights = self.attn(text, kv, kv, need_weights=True, average_attn_weights=True)  # (M, Lt, D), (M, Lt, N)
        out = out + self.mlp(self.norm_mlp(out))
        pool = text_valid.to(out.dtype) / text_valid.sum(dim=1, keepdim=True).clamp_min(1).to(out.dtype)  # (M, Lt)
        aligned = (pool[..., None] * out).sum(dim=1)
        attn = (pool[..., None] * weights.to(out.dtype)).sum(dim=1)
        remainder = kv.mean(dim=1) - (attn[..., None] * kv).sum(dim=1)
        return {"aligned": aligned, "attn": attn, "remainder": remainder}


class ComplementaryLearning(nn.Module):
    """Temporal affective complementary learning over T segments: one text-aligned branch per modality."""

    def __init__(self, dim: int, n_classes: int, num_heads: int = 8, mlp_ratio: float = 4.0):
        super().__init__()
        self.dim = dim
        self.norm_text = LayerNorm6(dim)
        self.visual = TextAlignedBranch(dim, n_classes, num_heads, mlp_ratio)
        self.audio = TextAlignedBranch(dim, n_classes, num_heads, mlp_ratio)
        self.apply(init_vit_weights)

    def forward(self, text: torch.Tensor, text_valid: torch.Tensor, tokens_v: torch.Tensor,
                tokens_a: torch.Tensor) -> Dict[str, torch.Tensor]:
        """text (B*T, Lt, D), text_valid (B*T, Lt), tokens_v (B, T, N, D), tokens_a (B, T, Na, D).

        Returns 'aligned_v'/'aligned_a' (B, T, D), 'text_attn_v' (B, T, N), 'text_attn_a' (B, T, Na),
        'remainder_v'/'remainder_a' (B, T, D), 'aux_logits_v'/'aux_logits_a' (B, C) (segment-averaged).
        """
        B, T = tokens_v.shape[:2]
        q = self.norm_text(text)
        out = {}
        for name, branch, tokens in (("v", self.visual, tokens_v), ("a", self.audio, tokens_a)):
            r = branch(q, text_valid, tokens.flatten(0, 1))
            out[f"aligned_{name}"] = r["aligned"].unflatten(0, (B, T))
            out[f"text_attn_{name}"] = r["attn"].unflatten(0, (B, T))
            out[f"remainder_{name}"] = r["remainder"].unflatten(0, (B, T))
            out[f"aux_logits_{name}"] = branch.head(branch.norm_head(out[f"aligned_{name}"].mean(dim=1)))
        return out


# ---------------------------------------------------------------------------------- the wrapper


class MART(nn.Module):
    """The MBT backbone plus MART's stage-1 modules; build the optimiser over `MART.parameters()`.

    mbt: models.mbt.MBT; decoder: MaskedDecoder; comp: ComplementaryLearning; text: models.text.TextEncoder
    (its projection maps to the MBT width). Without transcripts, `forward` is the MBT's forward, so
    evaluation and stage 2 see the plain backbone.
    """

    def __init__(self, mbt: nn.Module, decoder: MaskedDecoder, comp: ComplementaryLearning, text: nn.Module):
        super().__init__()
        cfg = mbt.video.cfg
        width = cfg.dim
        patch_dim = cfg.tubelet_size * cfg.patch_size * cfg.patch_size * 3
        if decoder.in_dim != width or decoder.num_patches != cfg.num_patches or decoder.patch_dim != patch_dim:
            raise ValueError(f"decoder built for width {decoder.in_dim}, {decoder.num_patches} tokens of "
                             f"{decoder.patch_dim} pixels; the MBT has width {width}, {cfg.num_patches} tokens of "
                             f"{patch_dim} pixels")
        if comp.dim != width or text.proj.out_features != width:
            raise ValueError(f"complementary module (width {comp.dim}) and text projection "
                             f"({text.proj.out_features}) must match the MBT width {width}")
        self.mbt, self.decoder, self.comp, self.text = mbt, decoder, comp, text
        self.tubelet_size, self.patch_size = cfg.tubelet_size, cfg.patch_size

    def guide(self, video: torch.Tensor, audio: torch.Tensor, text_ids: torch.Tensor,
              text_mask: torch.Tensor) -> Dict[str, torch.Tensor]:
        """The pass on the unmasked video that steers stage 1 (run on the teacher, under no_grad).

        Returns 'seg_logits' (B, T, C) = seg_logits_v + seg_logits_a, 'cls_attn' (B, T, N) and
        'text_attn' (B, T, N) (text-to-visual attention)."""
        out = self.mbt(video, audio, return_tokens=True)
        comp = self.comp(self.text(text_ids, text_mask), text_mask, out["tokens_v"], out["tokens_a"])
        return {"seg_logits": out["seg_logits_v"] + out["seg_logits_a"], "cls_attn": out["cls_attn"],
                "text_attn": comp["text_attn_v"]}

    def predict(self, video: torch.Tensor, audio: torch.Tensor) -> Dict[str, torch.Tensor]:
        """The MBT's outputs on the unmasked video plus 'dec_logits' (B, T, C): the decoder's per-segment emotion
        logits, the source of MART's temporal degree of emotion (no text needed)."""
        B, T = video.shape[:2]
        out = self.mbt(video, audio, return_tokens=True)
        out["dec_logits"] = self.decoder(out["tokens_v"].flatten(0, 1))[1].unflatten(0, (B, T))
        return out

    def forward(self, video: torch.Tensor, audio: torch.Tensor, text_ids: Optional[torch.Tensor] = None,
                text_mask: Optional[torch.Tensor] = None, video_mask: Optional[torch.Tensor] = None
                ) -> Dict[str, torch.Tensor]:
        """video uint8 (B, T, 3, L, S, S), audio (B, T, F, n_mels), text_ids/text_mask (B*T, Lt) in (batch,
        segment) order, video_mask bool (B, T, N).

        Without text: the MBT's outputs. With text, also 'recon' (B, T, N, P) reconstructed tubelets,
        'dec_logits' (B, T, C) the decoder's per-segment emotion logits, and the ComplementaryLearning outputs.
        """
        if text_ids is None:
            return self.mbt(video, audio, video_mask=video_mask)
        B, T = video.shape[:2]
        out = self.mbt(video, audio, video_mask=video_mask, return_tokens=True)
        recon, dec_logits = self.decoder(out["tokens_v"].flatten(0, 1))
        out["recon"] = recon.unflatten(0, (B, T))
        out["dec_logits"] = dec_logits.unflatten(0, (B, T))
        out.update(self.comp(self.text(text_ids, text_mask), text_mask, out["tokens_v"], out["tokens_a"]))
        return out


def build_mart(mbt: nn.Module, n_classes: int, text: nn.Module, decoder: DecoderConfig = DecoderConfig(),
               comp_heads: int = 8) -> MART:
    """MART around `mbt` with a decoder and TACL sized from the MBT's video configuration."""
    cfg = mbt.video.cfg
    dec = MaskedDecoder(cfg.dim, cfg.num_patches, cfg.tubelet_size * cfg.patch_size ** 2 * 3, n_classes, decoder)
    return MART(mbt, dec, ComplementaryLearning(cfg.dim, n_classes, comp_heads), text)


def mbt_state_from_mart(state: Dict[str, torch.Tensor], path="<state_dict>") -> Dict[str, torch.Tensor]:
    """A MART state_dict -> the MBT backbone's state_dict (keys under `mbt.`), to start stage 2 from stage 1."""
    backbone = {k[len("mbt."):]: v for k, v in state.items() if k.startswith("mbt.")}
    if not backbone:
        raise CheckpointError(f"{path} holds no 'mbt.' keys, so it is not a MART stage-1 model; pass the best.pth or "
                              "last.pth of a stage-1 run")
    return backbone
