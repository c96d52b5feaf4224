"""VideoMAE-style video ViT applied to one temporal segment (the visual branch of MBT / MART).

A segment of L frames at S x S is cut into tubelets of 2 x 16 x 16 (16 frames at 112 x 112 give
8 x 7 x 7 = 392 tokens), a CLS token is prepended, fixed 1-D sinusoidal positions are added and
pre-norm transformer blocks (timm's `Block`) follow. The CLS output goes through `fc_norm`.

VideoMAE's attention has a bias on q and on v but none on k. Here timm's `Attention` is reused
unchanged; only its `qkv` projection is replaced by `QVBiasLinear`, a linear layer that owns a
weight (3D, D) and two bias vectors `q_bias`, `v_bias` (D,) and applies the bias
`cat(q_bias, 0, v_bias)`. The k part of the bias is a constant zero, not a parameter, so it can
neither be trained nor decayed, and timm's fused scaled-dot-product attention runs as usual.
State-dict keys: `blocks.i.attn.qkv.{weight,q_bias,v_bias}` (VideoMAE files name the biases
`blocks.i.attn.{q_bias,v_bias}`; `models/pretrained.py` maps them).
"""
from dataclasses import dataclass
from functools import partial
from typing import List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import trunc_normal_
from timm.models.vision_transformer import Attention, Block

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLS_POSITIONS = ("first", "none")

LayerNorm6 = partial(nn.LayerNorm, eps=1e-6)


@dataclass(frozen=True)
class VideoViTConfig:
    """Video ViT hyper-parameters; the defaults are VideoMAE ViT-B/16 on 16 x 112 x 112 segments.

    mean/std: pixel normalisation applied to uint8 input scaled to [0, 1]. VideoMAE was trained
        with ImageNet mean/std (the default). The official MART code feeds x / 255 - 100 / 255
        instead: mean = (100 / 255,) * 3, std = (1, 1, 1).
    cls_position: 'first' (official MART) builds one sinusoid table of N + 1 positions, the CLS
        token takes position 0 and patch i position i + 1; 'none' gives patch i position i, as in
        VideoMAE pre-training, and the CLS token no position.
    """
    img_size: int = 112
    num_frames: int = 16
    patch_size: int = 16
    tubelet_size: int = 2
    dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    mean: Tuple[float, float, float] = IMAGENET_MEAN
    std: Tuple[float, float, float] = IMAGENET_STD
    cls_position: str = "first"

    @property
    def grid(self) -> Tuple[int, int, int]:
        return (self.num_frames // self.tubelet_size, self.img_size // self.patch_size,
                self.img_size // self.patch_size)

    @property
    def num_patches(self) -> int:
        t, h, w = self.grid
        return t * h * w


def sinusoid_table(n_positions: int, dim: int) -> torch.Tensor:
    """Fixed 1-D sine/cosine positions (Vaswani et al.): (n_positions, dim), even dims sin, odd cos."""
    pos = torch.arange(n_positions, dtype=torch.float64)[:, None]
    rates = torch.pow(10000.0, -2.0 * (torch.arange(dim) // 2).double() / dim)
    angles = pos * rates  # (n, dim)
    table = torch.where(torch.arange(dim) % 2 == 0, angles.sin(), angles.cos())
    return table.float()


class QVBiasLinear(nn.Linear):
    """The fused qkv projection with learnt q and v biases and a k bias fixed at zero (VideoMAE)."""

    def __init__(self, dim: int, attn_dim: int):
        super().__init__(dim, 3 * attn_dim, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(attn_dim))
        self.v_bias = nn.Parameter(torch.zeros(attn_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = torch.cat((self.q_bias, torch.zeros_like(self.q_bias), self.v_bias))
        return F.linear(x, self.weight, bias)


class QVBiasAttention(Attention):
    """timm's multi-head self-attention with VideoMAE's q/v-only biases."""

    def __init__(self, dim: int, num_heads: int = 8, **kwargs):
        kwargs["qkv_bias"] = False
        super().__init__(dim, num_heads=num_heads, **kwargs)
        self.qkv = QVBiasLinear(dim, self.attn_dim)


def cls_attention(block: Block, x: torch.Tensor) -> torch.Tensor:
    """Attention weights of the CLS query (token 0) inside `block`, per head.

    x: (N, L, D) the block's input. Returns (N, H, L): softmax over all L keys, the same
    distribution the block's own attention uses for token 0 (before attention dropout).
    """
    attn = block.attn
    qkv = attn.qkv(block.norm1(x)).unflatten(-1, (3, attn.num_heads, attn.head_dim))  # (N, L, 3, H, d)
    q = attn.q_norm(qkv[:, :1, 0].transpose(1, 2))  # (N, H, 1, d)
    k = attn.k_norm(qkv[:, :, 1].transpose(1, 2))  # (N, H, L, d)
    scores = (q.float() * k.float()).sum(-1) * attn.scale  # (N, H, L), in float32 also under autocast
    return scores.softmax(dim=-1)


class TubeletEmbed(nn.Module):
    """Non-overlapping tubelets -> tokens: (N, 3, L, S, S) -> (N, P, D), P in (t, h, w) order."""

    def __init__(self, dim: int, tubelet_size: int, patch_size: int):
        super().__init__()
        size = (tubelet_size, patch_size, patch_size)
        self.proj = nn.Conv3d(3, dim, kernel_size=size, stride=size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


def drop_path_rates(rate: float, depth: int) -> List[float]:
    """Stochastic-depth rate of each block, rising linearly from 0 to `rate` (timm, VideoMAE)."""
    return [rate * i / max(depth - 1, 1) for i in range(depth)]


def init_vit_weights(module: nn.Module) -> None:
    """timm/VideoMAE initialisation: truncated normal (0.02) linear weights, zero biases, unit LayerNorm."""
    if isinstance(module, nn.Linear):
        trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class VideoViT(nn.Module):
    """Per-segment video transformer: `embed` (uint8 -> tokens), `blocks`, `fc_norm`.

    `forward` runs the whole encoder on (N, 3, L, S, S) uint8 clips and returns the normalised CLS
    feature (N, D); MBT calls `embed`, the blocks and `fc_norm` itself to interleave the fusion.
    """

    def __init__(self, cfg: VideoViTConfig = VideoViTConfig(), drop_path: float = 0.0):
        super().__init__()
        if cfg.cls_position not in CLS_POSITIONS:
            raise ValueError(f"cls_position must be one of {CLS_POSITIONS}, got {cfg.cls_position!r}")
        if cfg.img_size % cfg.patch_size or cfg.num_frames % cfg.tubelet_size:
            raise ValueError(f"img_size {cfg.img_size} / num_frames {cfg.num_frames} must be multiples of "
                             f"patch_size {cfg.patch_size} / tubelet_size {cfg.tubelet_size}")
        self.cfg = cfg
        self.num_patches = cfg.num_patches
        self.patch_embed = TubeletEmbed(cfg.dim, cfg.tubelet_size, cfg.patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.dim))
        self.mask_token = nn.Parameter(torch.zeros(1, 1, cfg.dim))
        n_pos = self.num_patches + (cfg.cls_position == "first")
        self.register_buffer("pos_embed", sinusoid_table(n_pos, cfg.dim)[None], persistent=False)
        self.register_buffer("mean", torch.tensor(cfg.mean).view(1, 3, 1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(cfg.std).view(1, 3, 1, 1, 1), persistent=False)
        rates = drop_path_rates(drop_path, cfg.depth)
        self.blocks = nn.ModuleList([
            Block(cfg.dim, cfg.num_heads, mlp_ratio=cfg.mlp_ratio, drop_path=r, norm_layer=LayerNorm6,
                  attn_layer=QVBiasAttention)
            for r in rates])
        self.fc_norm = LayerNorm6(cfg.dim)
        self.apply(init_vit_weights)
        for p in (self.cls_token, self.mask_token):
            trunc_normal_(p, std=0.02)

    def embed(self, video: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """video: uint8 (N, 3, L, S, S); mask: bool (N, P) patch tokens replaced by `mask_token`.

        Returns (N, 1 + P, D) tokens, CLS first, positions added after the mask substitution.
        """
        x = (video.float() / 255.0 - self.mean) / self.std
        x = self.patch_embed(x)  # (N, P, D)
        if mask is not None:
            if mask.shape != x.shape[:2]:
                raise ValueError(f"video mask has shape {tuple(mask.shape)}, expected {tuple(x.shape[:2])}")
            x = torch.where(mask[..., None], self.mask_token.to(x.dtype), x)
        cls = self.cls_token.expand(x.shape[0], -1, -1).to(x.dtype)
        if self.cfg.cls_position == "first":
            return torch.cat([cls, x], dim=1) + self.pos_embed.to(x.dtype)
        return torch.cat([cls, x + self.pos_embed.to(x.dtype)], dim=1)

    def forward(self, video: torch.Tensor, mask: Optional[torch.Tensor] = None, pool: str = "cls") -> torch.Tensor:
        """pool: 'cls' (the CLS token) or 'mean' (VideoMAE's fine-tuning head: the norm after the mean over patch
        tokens), as the MBT pools (--mbt-pool)."""
        if pool not in ("cls", "mean"):
            raise ValueError(f"pool {pool!r} is not 'cls' or 'mean'")
        x = self.embed(video, mask)
        for blk in self.blocks:
            x = blk(x)
        return self.fc_norm(x[:, 1:].mean(dim=1)) if pool == "mean" else self.fc_norm(x[:, 0])  # (N, D)
