"""CTEN: Cross-modal Temporal Erasing Network (Zhang et al., CVPR 2023), the network; the three-view training step
with temporal erasing lives in core/methods/cten.py and the erasing math in models/erasing.py.

video uint8 (B, T, 3, L, S, S) -> frozen 3D ResNet per snippet -> F_v (B, T, D)
audio (B, T, F, 128)           -> 2D ResNet per segment       -> F_a (B, T, D)
-> intra-modal non-local blocks (Eqs. 1-4) -> inter-modal cross attention (Eqs. 5-6)
-> temporal attention (Eq. 7) -> attention pooling -> concat [visual, audio] (2D) -> dropout -> linear classifier.
Both the joint attention's input and the classifier's read the streams in the order [visual, audio] (`streams`),
the release's `torch.cat((v2, a2))`, so a release checkpoint maps key by key (tools/convert_release.py).
Outputs: logits (B, C), att_v / att_a (B, T), and for weakly-supervised detection (core/detection.py) seg_scores
(B, T, C), the classifier applied to each segment's features (W f_t, a class activation sequence), and seg_logits
(B, T, C), each segment's attention-weighted contribution A_t W f_t to the logits (T-CAM).

| option | paper (default) | official release |
| --- | --- | --- |
| `temporal_attention` | `paper`: one attention per modality, A = ReLU(W1 (W2 (F' + F'')^T)^T), each stream pooled by its own | `joint`: one attention over the concatenated [F''_v, F''_a], W2 -> BN -> Tanh -> W1 -> ReLU |
| `nonlocal_init` | `identity`: F' = F + W_z Z, W_z's BN scale zero at start | `official`: F' = BN(W_z Z) + alpha F, alpha = 0 at start |
| `inter_direction` | `paper`: Eq. 5's symbols, each stream queries the other's features | `official` (default, as the spec): the other stream's queries mix each stream's own segments |
| `audio_arch` | `resnet50` | `resnet18` (default here: the paper is silent on what the release changed) |
| `visual_input` | `kinetics400` (`resnet-101-kinetics.pth`) | `kinetics_moments` (`r3d101_KM_200ep.pth`) |

Where a part is switched off (the Table 2 ablations), it is the identity: without `intra` F' = F, without `inter`
F'' = F' and the paper attention reads F' alone. Each attention is pooled as mean_t(A_t f_t) (the release's pooling)
over F'' of its stream. The visual backbone is always frozen (eval mode, no gradients); the audio trunk is frozen
alike with `freeze_audio` (paper Sec. 4.2; its projection still trains) and its input resized to `audio_resize`
squared when > 0 (the paper's 224). `trainable_parameters()` lists what the optimiser should see: the heads, and
the audio branch or its projection. Pretrained weights are filled in afterwards by
models/pretrained.py: `load_resnet3d(path, model.visual)`, `load_torchvision_resnet(path, model.audio)`.
"""
import torch
from torch import nn

from .audio_resnet import AudioResNet
from .relation import InterModalRelation, NonLocalBlock, TemporalAttention, attention_pool
from .resnet3d import ResNet3D


class CTEN(nn.Module):
    def __init__(self, n_classes: int, seq_len: int, modalities: str = "av", intra: bool = True, inter: bool = True,
                 temporal_attention: str = "paper", nonlocal_init: str = "identity", inter_direction: str = "official",
                 visual_depth: int = 101,
                 visual_input: str = "kinetics400", audio_arch: str = "resnet18", audio_first_conv: str = "official",
                 feature_dim: int | None = None, dropout: float = 0.2, nonlocal_inner: int = 256, heads: int = 8,
                 visual_chunk: int = 0, visual_bn: str = "eval", freeze_audio: bool = False, audio_resize: int = 0,
                 attention_w1_init: str = "default"):
        super().__init__()
        if modalities not in ("av", "v", "a"):
            raise ValueError(f"modalities {modalities!r} is not 'av', 'v' or 'a'")
        if temporal_attention not in ("paper", "joint"):
            raise ValueError(f"temporal attention {temporal_attention!r} is not 'paper' or 'joint'")
        if inter and modalities != "av":
            raise ValueError(f"the inter-modal relation needs both modalities, got modalities={modalities!r}; "
                             f"switch it off (inter=False) for a single-modality run")
        self.modalities = modalities
        self.streams = tuple(m for m in "va" if m in modalities)  # concatenation order: [visual, audio]
        self.seq_len = seq_len
        self.temporal_attention = temporal_attention
        self.visual_chunk = visual_chunk

        self.visual = None
        if "v" in modalities:
            self.visual = ResNet3D(visual_depth, visual_input, frozen=True, bn_train=visual_bn == "train")
            if feature_dim is not None and feature_dim != self.visual.feature_dim:
                raise ValueError(f"feature_dim={feature_dim} differs from the {visual_depth}-layer 3D ResNet's width "
                                 f"{self.visual.feature_dim}; leave it unset to follow the backbone")
            feature_dim = self.visual.feature_dim
        dim = feature_dim or 2048
        self.feature_dim = dim
        self.audio = AudioResNet(audio_arch, dim, audio_first_conv, audio_resize, freeze_audio) if "a" in modalities else None

        self.intra = None
        if intra:
            self.intra = nn.ModuleDict({m: NonLocalBlock(dim, nonlocal_inner, nonlocal_init) for m in modalities})
        self.inter = InterModalRelation(dim, heads, inter_direction) if inter else None
        if temporal_attention == "paper":
            self.attention = nn.ModuleDict({m: TemporalAttention(dim, seq_len, w1_init=attention_w1_init)
                                            for m in modalities})
        else:
            self.attention = TemporalAttention(dim * len(modalities), seq_len, squash=True,
                                               w1_init=attention_w1_init)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(dim * len(modalities), n_classes)

    def visual_features(self, video: torch.Tensor) -> torch.Tensor:
        """uint8 (B, T, 3, L, S, S) -> (B, T, D). Snippets go through the backbone `visual_chunk` at a time (0: all)."""
        b, t = video.shape[:2]
        clips = video.flatten(0, 1)  # (B*T, 3, L, S, S)
        chunks = clips.split(self.visual_chunk) if self.visual_chunk else (clips,)
        return torch.cat([self.visual(c) for c in chunks]).view(b, t, -1)

    def audio_features(self, audio: torch.Tensor) -> torch.Tensor:
        """(B, T, F, 128) -> (B, T, D)."""
        return self.audio(audio)

    def audio_trunk_features(self, audio: torch.Tensor) -> torch.Tensor:
        """(B, T, F, 128) -> (B, T, W) audio trunk output (before the projection); what a feature cache stores."""
        return self.audio.trunk_features(audio)

    def head(self, fv: torch.Tensor | None = None, fa: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Segment features (B, T, D) of the model's modalities -> {'logits' (B, C), 'att_v' (B, T), 'att_a' (B, T)}
        (attention keys only for the modalities present; raw ReLU outputs, before min-max normalisation)."""
        feats = {m: f for m, f in (("v", fv), ("a", fa)) if m in self.modalities}
        absent = [m for m, f in feats.items() if f is None]
        if absent:
            raise ValueError(f"CTEN(modalities={self.modalities!r}) needs features for {absent}")
        if self.intra is not None:
            feats = {m: self.intra[m](f) for m, f in feats.items()}  # F', Eqs. 1-4
        fused = feats
        if self.inter is not None:
            fv2, fa2 = self.inter(feats["v"], feats["a"])  # F'', Eqs. 5-6
            fused = {"v": fv2, "a": fa2}
        out = {}
        if self.temporal_attention == "paper":
            streams = []
            for m in self.streams:
                x = feats[m] + fused[m] if self.inter is not None else feats[m]
                att = self.attention[m](x)  # (B, T)  Eq. 7
                streams.append((fused[m], att))
                out[f"att_{m}"] = att
        else:
            joint = torch.cat([fused[m] for m in self.streams], dim=-1)  # (B, T, 2D) [F''_v, F''_a]
            att = self.attention(joint)
            streams = [(joint, att)]
            out.update({f"att_{m}": att for m in self.modalities})
        z = torch.cat([attention_pool(f, a) for f, a in streams], dim=-1)  # (B, 2D) [z_v, z_a] or (B, D)
        out["logits"] = self.classifier(self.dropout(z))
        # the classifier on each segment's pooled-stream features: W f_t (CAS) and A_t W f_t (T-CAM, each segment's
        # contribution to the logits: logits = seg_logits.mean(1) + bias without dropout)
        weight = self.classifier.weight.t()  # (2D, C)
        out["seg_scores"] = torch.cat([f for f, _ in streams], dim=-1) @ weight  # (B, T, C)
        out["seg_logits"] = torch.cat([f * a.unsqueeze(-1) for f, a in streams], dim=-1) @ weight  # (B, T, C)
        return out

    def forward(self, video: torch.Tensor | None = None, audio: torch.Tensor | None = None,
                visual_feats: torch.Tensor | None = None,
                audio_feats: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """video uint8 (B, T, 3, L, S, S) or precomputed visual_feats (B, T, D) (frozen backbone: features computed
        once, or read from a feature cache), audio (B, T, F, 128) or precomputed audio trunk features audio_feats
        (B, T, W) (frozen audio trunk)."""
        given = {"v": ("video", video if visual_feats is None else visual_feats),
                 "a": ("audio", audio if audio_feats is None else audio_feats)}
        absent = [given[m][0] for m in self.modalities if given[m][1] is None]
        if absent:
            raise ValueError(f"CTEN(modalities={self.modalities!r}) needs {' and '.join(absent)} input")
        fv = None
        if "v" in self.modalities:
            fv = visual_feats if visual_feats is not None else self.visual_features(video)
        fa = None
        if "a" in self.modalities:
            fa = self.audio.project(audio_feats) if audio_feats is not None else self.audio_features(audio)
        return self.head(fv, fa)

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The parameters the optimiser should update: everything but the frozen backbones."""
        return [p for p in self.parameters() if p.requires_grad]
