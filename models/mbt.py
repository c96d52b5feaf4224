"""Multimodal bottleneck transformer (MBT, Nagrani et al. 2021) over video and audio segments: MART's backbone.

Each of the T segments of a video is a (video clip, 1-s fbank) pair; segments are processed as one
(B * T) batch in (batch, segment) order. Blocks 0 .. fusion_layer - 1 of the video ViT and of the
AST run separately; in each later layer the shared bottleneck tokens are appended to both
sequences, each modality's block updates its own copy, and the two copies are averaged to give the
next layer's bottleneck. Visual logits come from the CLS token (fc_norm), audio logits from the mean
of the normalised CLS and distillation tokens (pool='cls', the spec and the official release); with
pool='mean' both come from the normalised mean of the patch tokens instead (VideoMAE's fine-tuning
head; a demo-size option, docs/mbt_demo.md). Both are averaged over segments, and `logits` is their sum.
"""
from typing import Dict, Optional

import torch
import torch.nn as nn
from timm.layers import trunc_normal_
from torch.utils.checkpoint import checkpoint

from models.ast import AST, ASTConfig, N_EXTRA_TOKENS
from models.pretrained import load_ast, load_videomae
from models.video_vit import VideoViT, VideoViTConfig, cls_attention

POOLS = ("cls", "mean")


class MBT(nn.Module):
    """Audio-visual bottleneck fusion of a VideoMAE ViT (`self.video`) and an AST (`self.audio`).

    n_bottleneck: number of shared bottleneck tokens (learnt).
    fusion_layer: index of the first fused layer (0 = fuse from the start, depth = never fuse).
    drop_path: stochastic-depth rate of the last block of each branch (linear from 0).
    grad_checkpointing: recompute each block's activations in the backward pass (saves memory).
    freeze_audio_early: official-code behaviour: the AST's embedding and its blocks before
        `fusion_layer` run under torch.no_grad() and are frozen (requires_grad False). Off by
        default (the paper trains the whole network).
    ast_early_fp16: the AST's embedding and blocks before `fusion_layer` under fp16 autocast when the input is
        on CUDA (the MART release's AST `forward_fea`); nothing changes on CPU.
    pool: 'cls' (the spec: CLS / CLS + distillation tokens) or 'mean' (mean of the patch tokens).
    head_init_scale: the heads' weights are drawn trunc_normal(0.02) and multiplied by it, biases zero
        (VideoMAE's fine-tuning head init, whose scale is 0.001); None keeps nn.Linear's default init.
    """

    def __init__(self, n_classes: int, video: VideoViTConfig = VideoViTConfig(), audio: ASTConfig = ASTConfig(),
                 n_bottleneck: int = 32, fusion_layer: int = 8, drop_path: float = 0.0,
                 grad_checkpointing: bool = False, freeze_audio_early: bool = False, pool: str = "cls",
                 ast_early_fp16: bool = False,
                 head_init_scale: Optional[float] = None):
        super().__init__()
        if pool not in POOLS:
            raise ValueError(f"pool must be one of {POOLS}, got {pool!r}")
        if video.dim != audio.dim or video.depth != audio.depth:
            raise ValueError(f"video and audio branches need the same width and depth, got "
                             f"{video.dim}/{video.depth} and {audio.dim}/{audio.depth}")
        if not 0 <= fusion_layer <= video.depth:
            raise ValueError(f"fusion_layer must be in [0, {video.depth}], got {fusion_layer}")
        self.fusion_layer, self.pool = fusion_layer, pool
        self.grad_checkpointing = grad_checkpointing
        self.freeze_audio_early, self.ast_early_fp16 = freeze_audio_early, ast_early_fp16
        self.video = VideoViT(video, drop_path)
        self.audio = AST(audio, drop_path)
        self.bottleneck = nn.Parameter(torch.zeros(1, n_bottleneck, video.dim))
        trunc_normal_(self.bottleneck, std=0.02)
        self.head_v = nn.Linear(video.dim, n_classes)
        self.head_a = nn.Linear(audio.dim, n_classes)
        if head_init_scale is not None:
            for head in (self.head_v, self.head_a):
                trunc_normal_(head.weight, std=0.02)
                head.weight.data.mul_(head_init_scale)
                nn.init.zeros_(head.bias)
        if freeze_audio_early:
            for p in self._audio_early_parameters():
                p.requires_grad_(False)

    def load_pretrained(self, videomae_path: Optional[str] = None, ast_path: Optional[str] = None,
                        trusted: bool = False) -> Dict[str, dict]:
        """Loads a VideoMAE file into the video branch and the AudioSet AST file into the audio branch (all blocks
        of each, fused ones included). What no file provides keeps its initialisation: the video CLS and mask
        tokens, the bottleneck tokens and the two heads. Returns each loader's report under 'video' / 'audio'."""
        report = {}
        if videomae_path is not None:
            report["video"] = load_videomae(videomae_path, self.video, trusted=trusted)
        if ast_path is not None:
            report["audio"] = load_ast(ast_path, self.audio, trusted=trusted)
        return report

    def _audio_early_parameters(self):
        yield from self.audio.patch_embed.parameters()
        yield from (self.audio.cls_token, self.audio.dist_token, self.audio.pos_embed)
        for blk in self.audio.blocks[:self.fusion_layer]:
            yield from blk.parameters()

    def _block(self, blk: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and torch.is_grad_enabled():
            return checkpoint(blk, x, use_reentrant=False)
        return blk(x)

    def _audio_early(self, fbank: torch.Tensor) -> torch.Tensor:
        x = self.audio.embed(fbank)
        for blk in self.audio.blocks[:self.fusion_layer]:
            x = self._block(blk, x)
        return x

    def forward(self, video: torch.Tensor, audio: torch.Tensor, video_mask: Optional[torch.Tensor] = None,
                return_tokens: bool = False) -> Dict[str, torch.Tensor]:
        """video: uint8 (B, T, 3, L, S, S); audio: (B, T, F, n_mels); video_mask: bool (B, T, N).

        Returns 'logits' (B, C) = 'logits_v' + 'logits_a', 'seg_logits_v'/'seg_logits_a' (B, T, C)
        and, with return_tokens, 'tokens_v' (B, T, N, D) / 'tokens_a' (B, T, Na, D) (final patch
        tokens after fc_norm / norm) and 'cls_attn' (B, T, N): the last block's CLS-to-patch
        attention averaged over heads (softmax over all its keys, CLS and bottleneck included).
        """
        B, T = video.shape[:2]
        if audio.shape[:2] != (B, T):
            raise ValueError(f"video has (B, T) = {(B, T)} but audio {tuple(audio.shape[:2])}")
        mask = None if video_mask is None else video_mask.flatten(0, 1)
        xv = self.video.embed(video.flatten(0, 1), mask)  # (BT, 1 + N, D)
        fp16 = self.ast_early_fp16 and audio.is_cuda
        with torch.autocast("cuda", dtype=torch.float16, enabled=fp16), torch.set_grad_enabled(
                torch.is_grad_enabled() and not self.freeze_audio_early):
            xa = self._audio_early(audio.flatten(0, 1))  # (BT, 2 + Na, D)
        if fp16:
            xa = xa.to(xv.dtype)  # the fused blocks run at the precision of the rest
        depth = len(self.video.blocks)
        attn = None
        for i in range(self.fusion_layer):
            if return_tokens and i == depth - 1:
                attn = cls_attention(self.video.blocks[i], xv)  # (BT, H, nv)
            xv = self._block(self.video.blocks[i], xv)

        nv, na = xv.shape[1], xa.shape[1]
        z = self.bottleneck.expand(xv.shape[0], -1, -1).to(xv.dtype)  # (BT, n_bottleneck, D)
        for i in range(self.fusion_layer, depth):
            blk_v, blk_a = self.video.blocks[i], self.audio.blocks[i]
            yv = torch.cat([xv, z], dim=1)
            if return_tokens and i == depth - 1:
                attn = cls_attention(blk_v, yv)  # (BT, H, nv + n_bottleneck)
            yv = self._block(blk_v, yv)
            ya = self._block(blk_a, torch.cat([xa, z.to(xa.dtype)], dim=1))
            xv, xa = yv[:, :nv], ya[:, :na]
            z = (yv[:, nv:] + ya[:, na:]) / 2

        fv = self.video.fc_norm(xv)  # (BT, 1 + N, D)
        fa = self.audio.norm(xa)  # (BT, 2 + Na, D)
        if self.pool == "cls":
            pooled_v, pooled_a = fv[:, 0], fa[:, :N_EXTRA_TOKENS].mean(dim=1)  # (BT, D)
        else:
            # VideoMAE's fine-tuning head: the norm after the mean over patch tokens
            pooled_v = self.video.fc_norm(xv[:, 1:].mean(dim=1))
            pooled_a = self.audio.norm(xa[:, N_EXTRA_TOKENS:].mean(dim=1))
        seg_v = self.head_v(pooled_v).unflatten(0, (B, T))  # (B, T, C)
        seg_a = self.head_a(pooled_a).unflatten(0, (B, T))
        logits_v, logits_a = seg_v.mean(dim=1), seg_a.mean(dim=1)
        out = {"logits": logits_v + logits_a, "logits_v": logits_v, "logits_a": logits_a,
               "seg_logits_v": seg_v, "seg_logits_a": seg_a}
        if return_tokens:
            out["tokens_v"] = fv[:, 1:].unflatten(0, (B, T))
            out["tokens_a"] = fa[:, N_EXTRA_TOKENS:].unflatten(0, (B, T))
            out["cls_attn"] = attn[:, :, 1:nv].mean(dim=1).unflatten(0, (B, T))
        return out
