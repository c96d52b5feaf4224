"""AST (Gong et al., 2021): a DeiT over a log-mel fbank, applied to one temporal segment.

Input per segment: (F, n_mels) = (100 frames, 128 mel bins), already normalised by the data
pipeline. The fbank is seen as a 1-channel image of n_mels rows (frequency) by F columns (time)
and cut into overlapping 16 x 16 patches with strides 10 (frequency) and 10 (time): 12 x 9 = 108
patches, flattened frequency-major (patch index = f * 9 + t). A CLS and a distillation token are
prepended (110 tokens) and a learnt positional embedding is added. The AudioSet checkpoint's
embedding covers a 12 x 101 grid (1024 frames); `models.pretrained.cut_ast_pos_embed` adapts it to
this grid when the file is loaded.
"""
from dataclasses import dataclass
from typing import Optional, Tuple

import torch
import torch.nn as nn
from timm.layers import trunc_normal_
from timm.models.vision_transformer import Block

from models.video_vit import LayerNorm6, drop_path_rates, init_vit_weights

N_EXTRA_TOKENS = 2  # CLS, distillation


@dataclass(frozen=True)
class ASTConfig:
    """AST hyper-parameters; the defaults are the AudioSet AST (DeiT-base) on 100-frame segments.

    patch_freq: the patch's height in mel bins (None: patch_size, AST's square patches). A demo-size
    layout sets it to n_mels: each token is then a whole-spectrum time slice (docs/mbt_demo.md).
    input_mean / input_std: the input becomes (fbank - input_mean) / input_std (default: unchanged). AST
    normalises each dataset's fbank to mean 0 and std 0.5 with that dataset's own statistics; the data
    pipeline uses fixed statistics, so a set with others (the demo) can be re-normalised here.
    """
    n_mels: int = 128
    n_frames: int = 100
    patch_size: int = 16
    patch_freq: Optional[int] = None
    input_mean: float = 0.0
    input_std: float = 1.0
    fstride: int = 10
    tstride: int = 10
    dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0

    @property
    def patch_height(self) -> int:
        return self.patch_size if self.patch_freq is None else self.patch_freq

    @property
    def grid(self) -> Tuple[int, int]:
        return ((self.n_mels - self.patch_height) // self.fstride + 1,
                (self.n_frames - self.patch_size) // self.tstride + 1)

    @property
    def num_patches(self) -> int:
        f, t = self.grid
        return f * t


class SpectrogramPatchEmbed(nn.Module):
    """(N, F, n_mels) fbank -> (N, P, D) overlapping patch tokens, frequency-major."""

    def __init__(self, dim: int, patch_size: int, fstride: int, tstride: int, patch_freq: Optional[int] = None):
        super().__init__()
        kernel = (patch_size if patch_freq is None else patch_freq, patch_size)  # (mel bins, frames)
        self.proj = nn.Conv2d(1, dim, kernel_size=kernel, stride=(fstride, tstride))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.transpose(1, 2).unsqueeze(1)  # (N, 1, n_mels, F)
        return self.proj(x).flatten(2).transpose(1, 2)


class AST(nn.Module):
    """Per-segment audio transformer: `embed` (fbank -> tokens), `blocks`, `norm`.

    `forward` runs the whole encoder on (N, F, n_mels) and returns the mean of the normalised
    CLS and distillation outputs (N, D), the AST embedding.
    """

    def __init__(self, cfg: ASTConfig = ASTConfig(), drop_path: float = 0.0):
        super().__init__()
        if min(cfg.grid) < 1:
            raise ValueError(f"a {cfg.n_mels} x {cfg.n_frames} fbank is smaller than one {cfg.patch_height} x "
                             f"{cfg.patch_size} patch")
        self.cfg = cfg
        self.num_patches = cfg.num_patches
        self.patch_embed = SpectrogramPatchEmbed(cfg.dim, cfg.patch_size, cfg.fstride, cfg.tstride, cfg.patch_freq)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.dim))
        self.dist_token = nn.Parameter(torch.zeros(1, 1, cfg.dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, N_EXTRA_TOKENS + self.num_patches, cfg.dim))
        rates = drop_path_rates(drop_path, cfg.depth)
        self.blocks = nn.ModuleList([
            Block(cfg.dim, cfg.num_heads, mlp_ratio=cfg.mlp_ratio, qkv_bias=True, drop_path=r, norm_layer=LayerNorm6)
            for r in rates])
        self.norm = LayerNorm6(cfg.dim)
        self.apply(init_vit_weights)
        for p in (self.cls_token, self.dist_token, self.pos_embed):
            trunc_normal_(p, std=0.02)

    def embed(self, fbank: torch.Tensor) -> torch.Tensor:
        """fbank: (N, F, n_mels) -> (N, 2 + P, D) tokens: CLS, distillation, patches."""
        if fbank.shape[1:] != (self.cfg.n_frames, self.cfg.n_mels):
            raise ValueError(f"audio segments have shape {tuple(fbank.shape[1:])}, "
                             f"expected ({self.cfg.n_frames}, {self.cfg.n_mels})")
        if self.cfg.input_mean != 0.0 or self.cfg.input_std != 1.0:
            fbank = (fbank - self.cfg.input_mean) / self.cfg.input_std
        x = self.patch_embed(fbank)  # (N, P, D)
        lead = torch.cat([self.cls_token, self.dist_token], dim=1).expand(x.shape[0], -1, -1).to(x.dtype)
        return torch.cat([lead, x], dim=1) + self.pos_embed.to(x.dtype)

    def forward(self, fbank: torch.Tensor, pool: str = "cls") -> torch.Tensor:
        """pool: 'cls' (the mean of the two leading tokens) or 'mean' (the norm after the mean over patch tokens), as
        the MBT pools (--mbt-pool)."""
        if pool not in ("cls", "mean"):
            raise ValueError(f"pool {pool!r} is not 'cls' or 'mean'")
        x = self.embed(fbank)
        for blk in self.blocks:
            x = blk(x)
        if pool == "mean":
            return self.norm(x[:, N_EXTRA_TOKENS:].mean(dim=1))  # (N, D)
        return self.norm(x)[:, :N_EXTRA_TOKENS].mean(dim=1)
