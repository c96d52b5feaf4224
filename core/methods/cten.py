"""CTEN's training step: the original video plus the keyframe and context views of temporal erasing (Sec. 3.3).

Per iteration (paper Eqs. 8-12):
  1. x_o: the frozen visual backbone gives F_v once (no gradient; or the feature cache gives it); with
     --freeze-audio the frozen audio trunk's features likewise (once per iteration, or from the cache; the erased
     views gather them as they would the windows); the network gives logits and each modality's temporal attention.
  2. The erasing rule splits the T segments into keyframes and context (models/erasing.py); the logs carry the
     share of videos whose keyframe / context view is empty (`empty_key_views`, `empty_context_views`) and the
     mean share of keyframe segments (`keyframe_fraction`), averaged over the epoch by the engine.
  3. x_k, x_l: each view is re-sampled into T segments over its kept frames. `resample` (default, the paper)
     reads the new snippets (parallel JPEG decoding through the dataset's `read_frames`, or with
     --decode-device cuda the JPEG bytes read by its threads and decoded batched on the GPU: `read_views`) and runs
     the backbone on them; with a feature cache the new snippets' features come from the cache's temporal grid; `reuse`
     re-indexes the original pass's segment features (one backbone pass per iteration; a shortcut that changes
     what the network sees). Audio is erased alike: each view segment takes the 1-s window of the original
     segment its snippet comes from (`--no-erase-audio`: the official release never erases audio).
  4. L = CE(x_o) + CE(x_k) + CE(x_l) (Eq. 12; `mean` is the official code's reduction).
The two views go through the heads as one batch of 2B (`--view-passes stacked`, [ours]: one pass) or as two
forward passes of B (`separate`, the release's train.py:30,32: every BatchNorm of the heads sees each view's own
batch statistics). Only x_o is used at inference.
"""
import argparse
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from core.engine import unwrap
from core.losses import classification_loss
from core.methods.base import Recipe, Stage, StageContext, WeightFlag
from core.weights import load_weight
from datasets.feature_cache import FeatureCache, audio_expectation, cache_expectation, grid_lookup
from datasets.frames import erased_view_frames
from models.cten import CTEN
from models.erasing import ERASE_RULES, erasing_masks, reuse_view, view_stats
from models.pretrained import load_resnet3d, load_torchvision_resnet

VIEW_PASSES = ("stacked", "separate")


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
                 views: str = "resample", reduction: str = "sum", erase_audio: bool = True,
                 read_frames: Optional[Callable] = None, grid_lookup: Optional[Callable] = None,
                 read_views: Optional[Callable] = None, view_passes: str = "stacked"):
        """read_frames(index, frame_indices (T, L), aug) -> uint8 (T, 3, L, S, S): the training dataset's reader.
        grid_lookup(batch, b, frame_indices (T, L)) -> (T, D): features of new snippets from a feature cache.
        read_views([(index, frame_indices, aug)], device) -> uint8 (B, T, 3, L, S, S) on device: the whole view's
        frames in one call (--decode-device cuda: decoded batched on the GPU); used instead of read_frames."""
        if views not in ("resample", "reuse"):
            raise ValueError(f"erase views {views!r} is not 'resample' or 'reuse'")
        if view_passes not in VIEW_PASSES:
            raise ValueError(f"view passes {view_passes!r} is not one of {VIEW_PASSES}")
        self.view_passes = view_passes
        self.criterion, self.erase, self.theta, self.rule = criterion, erase, theta, rule
        self.views, self.reduction, self.erase_audio = views, reduction, erase_audio
        self.read_frames, self.grid_lookup, self.read_views = read_frames, grid_lookup, read_views

    def predict(self, model, batch: dict) -> dict:
        return model(video=batch.get("video"), audio=batch.get("audio"), visual_feats=batch.get("visual_feats"),
                     audio_feats=batch.get("audio_feats"))

    def predict_views(self, model, batch: dict) -> dict:
        """Evaluation of the erased views (tools/attention_eval.py): the trained attention picks keyframes and
        context by this method's rule (Eq. 9) and each view is built as in training (`read_frames` / `grid_lookup`
        of the evaluated split; TSN's centred snippets) -> {'keyframe': logits (B, C), 'context': logits (B, C)}."""
        net = unwrap(model)
        fv = batch.get("visual_feats")
        if fv is None and "v" in net.modalities:
            fv = net.visual_features(batch["video"])  # (B, T, D)
        a_key = "audio_feats" if batch.get("audio_feats") is not None else "audio"  # cached frozen trunk or raw
        audio = batch[a_key] if "a" in net.modalities else None
        out = net(visual_feats=fv, **{a_key: audio})
        keyframes, context = erasing_masks([out[f"att_{m}"].float() for m in net.modalities], self.theta, self.rule)
        views = {}
        for name, keep in (("keyframe", keyframes), ("context", context)):
            fv_x, a_x = self._view(net, batch, fv, audio, keep, training=False)
            views[name] = net(visual_feats=fv_x, **{a_key: a_x})["logits"]
        return views

    def train_step(self, model, batch: dict, epoch: int):
        net = unwrap(model)
        labels = batch["label"]
        fv = batch.get("visual_feats")
        if fv is None and "v" in net.modalities:
            with torch.no_grad():
                fv = net.visual_features(batch["video"])  # (B, T, D), frozen backbone
        audio, fa = None, None  # raw audio (B, T, F, M) through the trunk, or the frozen trunk's features (B, T, W)
        if "a" in net.modalities:
            fa = batch.get("audio_feats")  # from the feature cache
            if fa is None and getattr(getattr(net, "audio", None), "frozen", False):
                with torch.no_grad():
                    fa = net.audio_trunk_features(batch["audio"])  # frozen trunk: once per iteration
            audio = batch["audio"] if fa is None else None
        a_key = "audio" if fa is None else "audio_feats"
        out = model(visual_feats=fv, **{a_key: audio if fa is None else fa})  # x_o through the (possibly DDP) model
        loss_o = self.criterion(out["logits"], labels)
        logs = {"loss_o": loss_o.item(), "acc_o": _acc(out["logits"], labels)}
        if not self.erase:
            return loss_o, logs

        atts = [out[f"att_{m}"].detach().float() for m in net.modalities]  # (B, T) each
        keyframes, context = erasing_masks(atts, self.theta, self.rule)  # Eq. 9
        a_in = audio if fa is None else fa
        fv_k, a_k = self._view(net, batch, fv, a_in, keyframes)
        fv_l, a_l = self._view(net, batch, fv, a_in, context)
        logits_k, logits_l = self._view_logits(net, (fv_k, a_k), (fv_l, a_l), a_key)
        loss_k, loss_l = self.criterion(logits_k, labels), self.criterion(logits_l, labels)
        loss = loss_o + loss_k + loss_l  # Eq. 12
        if self.reduction == "mean":
            loss = loss / 3
        logs.update(loss_k=loss_k.item(), loss_l=loss_l.item(), acc_k=_acc(logits_k, labels),
                    acc_l=_acc(logits_l, labels), **view_stats(keyframes, context))
        return loss, logs

    def _view_logits(self, net, view_k: tuple, view_l: tuple, a_key: str = "audio") -> tuple:
        """Logits (B, C) of the keyframe and context views, each given as (visual feats (B, T, D), audio input);
        `a_key`: 'audio' (raw, through the trunk) or 'audio_feats' (the frozen trunk's features). Through the
        unwrapped net (DDP syncs every gradient on the one backward of the loss)."""
        if self.view_passes == "separate":
            return tuple(net(visual_feats=fv, **{a_key: a})["logits"] for fv, a in (view_k, view_l))
        cat = lambda x, y: None if x is None else torch.cat([x, y])  # noqa: E731
        out = net(visual_feats=cat(view_k[0], view_l[0]), **{a_key: cat(view_k[1], view_l[1])})  # one batch of 2B
        return out["logits"].chunk(2)

    def _view(self, net, batch, fv, audio, keep, training: bool = True):
        """Visual features (B, T, D) and audio (B, T, F, M) or audio trunk features (B, T, W) of the view made of the
        segments in `keep` (B, T); an empty row means the whole video. training: TSN's random snippet offsets, else
        the centred ones."""
        B, T = keep.shape
        keep = keep | ~keep.any(dim=1, keepdim=True)
        if self.views == "reuse":
            idx = reuse_view(keep)  # (B, T) original segment per view segment
            gather = lambda x: None if x is None else x.gather(1, idx.view(B, T, *[1] * (x.dim() - 2)).expand_as(x))
            return gather(fv), gather(audio) if self.erase_audio else audio
        views, sources = [], []
        for b in range(B):
            n, sb, kb = int(batch["n_frames"][b]), batch["seg_bounds"][b].cpu(), keep[b].cpu()
            L = batch["frame_indices"].shape[-1]
            views.append(erased_view_frames(sb, kb, n, T, L, training=training))  # (T, L)
            sources.append(source_segments(views[-1], sb, kb, n))
        fv_view = None
        if fv is not None and self.grid_lookup is not None:
            stacked = torch.stack([self.grid_lookup(batch, b, fi) for b, fi in enumerate(views)])
            fv_view = stacked.to(keep.device, non_blocking=True).to(fv.dtype)  # (B, T, D)
        elif fv is not None:
            requests = [(int(batch["index"][b]), fi, batch["aug"][b].cpu()) for b, fi in enumerate(views)]
            if self.read_views is not None:
                stacked = self.read_views(requests, keep.device)
            else:
                stacked = torch.stack([self.read_frames(*r) for r in requests]).to(keep.device, non_blocking=True)
            with torch.no_grad():
                fv_view = net.visual_features(stacked)  # uint8 (B, T, 3, L, S, S) -> (B, T, D)
        a_view = audio
        if audio is not None and self.erase_audio:
            src = torch.stack(sources).to(audio.device)  # (B, T)
            a_view = audio.gather(1, src.view(B, T, *[1] * (audio.dim() - 2)).expand_as(audio))
        return fv_view, a_view


def gpu_view_reader(args, train_data) -> Optional[Callable]:
    """--decode-device cuda: the training dataset's batched decode_jpeg reader for the erased views, when CUDA is
    there; otherwise None (the PIL path of read_frames, the default and the fallback)."""
    if getattr(args, "decode_device", "cpu") != "cuda" or train_data is None:
        return None
    if not torch.cuda.is_available():
        print("--decode-device cuda: no CUDA device; the erased views are decoded on the CPU (PIL)")
        return None
    return train_data.read_views


def _acc(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return (logits.argmax(dim=1) == labels).float().mean().item()


# ---------------------------------------------------------------------------------------------- the recipe


@dataclass(frozen=True)
class CTENArch:
    """The options that fix CTEN's architecture (stored in its checkpoints)."""
    seq_len: int
    modalities: str
    intra: bool
    inter: bool
    temporal_attention: str
    nonlocal_init: str
    inter_direction: str
    visual_depth: int
    visual_input: str
    audio_arch: str
    audio_first_conv: str
    dropout: float
    visual_bn: str = "eval"
    freeze_audio: bool = False
    audio_resize: int = 0
    attention_w1_init: str = "default"


# The two whole configurations; docs/preset_sources.json gives each value's source (paper section or release
# file:line) and tools/preset_table.py --check holds every value to it. Both train on the whole training split and
# test the last epoch (--val-fraction 0 --select last), the papers' protocol, in fp32 (--amp none; neither the paper
# nor the release uses mixed precision; --amp bf16 is one flag away).
PROTOCOL_PAPER = dict(val_fraction=0.0, select="last")
_SHARED = dict(PROTOCOL_PAPER, lr=2e-4, batch_size=32, epochs=100, snippet_duration=16, sample_size=112,
               visual_depth=101, loss="ce", amp="none", view_passes="separate", det_method="oic")
# The paper (Sec. 3-4.2): SGD lr 2e-4, batch 32, T = 10, ResNet-50 audio on MFCC, the per-modality attention (Eq. 7),
# Eq. 5's direction, the identity non-local block, the keyframe rule of Eq. 9, both modalities erased, the summed
# loss (Eq. 12), detection read from the temporal attention (Sec. 4.5), the fixed feature extractor and MFCC
# resized to 224 x 224 (Sec. 4.2). Weight decay and epochs are the release's
# (the paper gives none).
PAPER = dict(_SHARED, optimizer="sgd", momentum=0.9, weight_decay=5e-4, seq_len=10, visual_input="kinetics400",
             audio_arch="resnet50", audio_first_conv="imagenet", audio_features="mfcc", temporal_attention="paper",
             inter_direction="paper", nonlocal_init="identity", erase_rule="paper", erase_audio=True,
             loss_reduction="sum", det_source="attention", freeze_audio=True, audio_resize=224)
# The release (opts.py, train.py, models/vaanet_erase.py): Adam, T = 16, ResNet-18 audio on fbank, the joint
# attention, its non-local init and inter-modal direction, its erasing rule (audio not erased), the two erased
# views as separate forward passes, the mean loss. The release has no detection code: the classifier read per
# segment (cas) is ours.
OFFICIAL = dict(_SHARED, optimizer="adam", weight_decay=5e-4, seq_len=16, visual_input="official", visual_bn="train",
                audio_arch="resnet18", audio_first_conv="official", audio_features="fbank",
                temporal_attention="joint", inter_direction="official", nonlocal_init="official",
                erase_rule="official", erase_audio=False, loss_reduction="mean", det_source="cas")
# The demo: tiny models that train on the built-in demo set in minutes on 2 CPU cores, on all 56 training videos with
# a cosine-decayed lr and the last epoch tested (the best of 8 validation videos picked epochs by chance: README).
DEMO_DATA = dict(root="data/demo/data", seq_len=6, snippet_duration=8, sample_size=64, workers=2)


# The published weight files each setting expects (docs/weights.md says where each is published).
VISUAL_INPUT_FILES = {"kinetics400": "Hara et al.'s Kinetics-400 file, 3D-ResNets-PyTorch's first release",
                      "kinetics_moments": "Hara et al.'s Kinetics-700 + Moments file, 3D-ResNets-PyTorch",
                      "official": "the file the CTEN release loads, fed with its own scaling"}
AUDIO_WEIGHT_FILES = {"resnet18": "resnet18-f37072fd.pth", "resnet50": "resnet50-0676ba61.pth"}


def reads_cached_audio(args) -> bool:
    """Whether a run with --feature-cache reads the audio trunk's features from it: the trunk is frozen and used."""
    return bool(args.freeze_audio) and args.modalities != "v"


def visual_weight_file(depth: int, visual_input: str) -> str:
    """The published 3D ResNet file of a depth and input scaling."""
    return f"resnet-{depth}-kinetics.pth" if visual_input == "kinetics400" else f"r3d{depth}_KM_200ep.pth"


class CTENRecipe(Recipe):
    name = "cten"
    help = "CTEN: cross-modal temporal erasing network (CVPR 2023)"
    arch = CTENArch
    cache = True
    presets = {
        "cten_demo": dict(DEMO_DATA, visual_depth=10, visual_input="kinetics400", audio_arch="resnet10",
                          audio_first_conv="imagenet", optimizer="adam", lr=1e-3, weight_decay=5e-4, batch_size=8,
                          epochs=10, loss="ce", lr_schedule="cosine", val_fraction=0.0, select="last",
                          attention_w1_init="identity",  # content-driven attention at init (docs/cten_attention.md)
                          det_also=["attention"]),  # the temporal attention's row beside cas
        "cten_ve8_paper": dict(PAPER, annotation_name="ve8.json"),
        "cten_ek6_paper": dict(PAPER, annotation_name="ek6.json"),
        # CAER (Table 1): the paper's setting and protocol; CAER's own validation clips join training
        # (tools/caer_lists.py), the last epoch is tested
        "cten_caer_paper": dict(PAPER, annotation_name="caer.json"),
        "cten_ve8_official": dict(OFFICIAL, annotation_name="ve8.json"),
        "cten_ek6_official": dict(OFFICIAL, annotation_name="ek6.json"),
    }

    def describe(self, args) -> str:
        form = "per modality (Eq. 7)" if args.temporal_attention == "paper" else "joint (the release's)"
        init = ", W1 = I at init" if args.attention_w1_init == "identity" else ""
        erase = f"erasing {args.erase_rule}" if args.erase else "no erasing"
        source = "cas" if args.det_source == "auto" else args.det_source  # CTEN's records carry cas
        also = "".join(f" (+ {s})" for s in args.det_also)
        return f"temporal attention {form}{init}; {erase}; detection from {source}{also}"

    def add_options(self, parser: argparse.ArgumentParser) -> None:
        B = argparse.BooleanOptionalAction
        g = parser.add_argument_group("CTEN model")
        g.add_argument("--modalities", choices=["av", "v", "a"], default="av",
                       help="streams the model reads: audio and visual, visual only, or audio only")
        g.add_argument("--intra", action=B, default=True, help="intra-modal non-local relation (Eqs. 1-4)")
        g.add_argument("--inter", action=B, default=True, help="inter-modal attention (Eqs. 5-6)")
        g.add_argument("--temporal-attention", choices=["paper", "joint"], default="paper",
                       help="paper: one attention per modality (Eq. 7); joint: the official code's joint attention")
        g.add_argument("--attention-w1-init", choices=["default", "identity"], default="default",
                       help="the temporal attention's W1 (T x T, Eq. 7) at initialisation: default (PyTorch's, as "
                            "both releases); identity (W1 = I, b1 = 0: each segment's attention starts from its own "
                            "score, not a position mix) [ours] (docs/cten_attention.md)")
        g.add_argument("--nonlocal-init", choices=["identity", "official"], default="identity",
                       help="identity: F + BN(W_z Z) with BN zeroed (Eq. 4); official: W_z Z + alpha F, alpha = 0")
        g.add_argument("--inter-direction", choices=["official", "paper"], default="official",
                       help="Eqs. 5-6: official: the other stream's queries mix each stream's own segments (the "
                            "release, the spec); paper: Eq. 5's symbols U_v = S(Q_v, K_a) V_a, each stream queries "
                            "the other")
        g.add_argument("--visual-depth", type=int, default=101, choices=[10, 18, 34, 50, 101, 152, 200],
                       help="layers of the 3D ResNet visual backbone")
        g.add_argument("--visual-input", choices=["kinetics400", "kinetics_moments", "official"],
                       default="kinetics_moments",
                       help="input scaling the visual checkpoint was trained with; official: the releases' "
                            "x/255 - 100/255 whatever the checkpoint (with --visual-bn train, as they run it)")
        g.add_argument("--visual-bn", choices=["eval", "train"], default="eval",
                       help="BatchNorm of the frozen 3D ResNet: eval (running statistics of the checkpoint) or "
                            "train (the releases: batch statistics in training, running statistics updated)")
        g.add_argument("--visual-weights", default=None, help="3D ResNet Kinetics checkpoint (.pth)")
        g.add_argument("--audio-arch", choices=["resnet10", "resnet18", "resnet50"], default="resnet18",
                       help="resnet18: the official code; resnet50: the paper; resnet10: a small variant for demos")
        g.add_argument("--audio-first-conv", choices=["official", "imagenet"], default="official",
                       help="official: 1-channel (7,1) conv, stride (2,1); imagenet: torchvision's 7x7 stride-2 conv "
                            "on 1 channel (half the compute; takes the ImageNet kernel summed over RGB with "
                            "--audio-weights)")
        g.add_argument("--audio-weights", default=None, help="torchvision ImageNet state_dict for the audio ResNet")
        g.add_argument("--freeze-audio", action=B, default=False,
                       help="fix the audio ResNet trunk (no gradients, BatchNorm running statistics), as the paper "
                            "fixes the whole feature extractor (Sec. 4.2); its projection still trains [ours]; with "
                            "--feature-cache the trunk's features are read from the cache")
        g.add_argument("--audio-resize", type=int, default=0, metavar="N",
                       help="resize each segment's audio input to N x N (bilinear) before the ResNet; the paper "
                            "resizes MFCC to 224 x 224 for its ImageNet ResNet-50; 0: off (the release)")
        g.add_argument("--dropout", type=float, default=0.2, help="dropout before the classifier")

        g = parser.add_argument_group("CTEN temporal erasing")
        g.add_argument("--erase", action=B, default=True, help="temporal erasing (Eqs. 8-9) and the two extra views")
        g.add_argument("--theta", type=float, default=0.7, help="keyframe threshold on min-max normalised attention")
        g.add_argument("--erase-rule", choices=ERASE_RULES, default="joint",
                       help="joint: min(A*_v, A*_a) renormalised over T >= theta (never an empty view); paper: both "
                            "modalities' A* >= theta (literal Eq. 9); official: joint attention >= 0.7 max + 0.3 min "
                            "(keyframes only; the context view is the segments strictly below)")
        g.add_argument("--erase-audio", action=B, default=True,
                       help="erase the audio with the same segments as the video (the paper); the official release "
                            "keeps the whole audio in both erased views (--no-erase-audio)")
        g.add_argument("--erase-views", choices=["resample", "reuse"], default="resample",
                       help="resample: TSN over the kept frames, new snippets through the backbone (faithful); "
                            "reuse: the original pass's segment features re-indexed (faster, not the paper)")
        g.add_argument("--view-passes", choices=VIEW_PASSES, default="stacked",
                       help="the keyframe and context views through the heads: stacked, one batch of 2B (faster, "
                            "[ours]); separate, two forward passes as the release (BatchNorm statistics per view)")
        g.add_argument("--loss-reduction", choices=["sum", "mean"], default="sum",
                       help="sum of the three view losses (paper Eq. 12) or their mean (official)")
        g.add_argument("--cache-train-crop", choices=["aug", "random"], default="aug",
                       help="with --feature-cache: the stored crop used in training: the one matching the drawn "
                            "crop/flip, or any")

    def validate(self, args) -> None:
        if args.audio_resize < 0:
            raise ValueError(f"--audio-resize {args.audio_resize}: give a side length > 0, or 0 for no resizing")
        if args.feature_cache and reads_cached_audio(args):
            if args.spec_augment:
                raise ValueError("--feature-cache with --freeze-audio reads the audio trunk's features of clean "
                                 "windows; --spec-augment masks the input every step: leave one of the two out")
            if args.audio_first_conv == "official":
                raise ValueError("--feature-cache with --freeze-audio needs an audio trunk that a weight file fixes; "
                                 "--audio-first-conv official starts its first conv at random in every run (no "
                                 "published file fits it): use --audio-first-conv imagenet, or leave out one of the "
                                 "two")
        if args.feature_cache and args.visual_bn == "train":
            raise ValueError("--feature-cache holds features of the backbone in eval mode; --visual-bn train changes "
                             "them every step: leave one of the two out")
        if args.eval_seq_len != args.seq_len:
            raise ValueError(f"CTEN's temporal attention (Eq. 7, W1: T x T) fixes T: --eval-seq-len "
                             f"{args.eval_seq_len} must equal --seq-len {args.seq_len}")

    def inputs(self, args) -> dict:
        return {"audio": args.modalities != "v"}

    def feature_cache(self, args) -> Optional[FeatureCache]:
        """The --feature-cache folder (core/data.py calls this only when it is set), checked against this run's
        backbone settings (a stale cache is refused); with --freeze-audio against its audio trunk's too, and the
        frozen trunk's features are then read from it."""
        audio = None
        if reads_cached_audio(args):
            audio = audio_expectation(args.audio_arch, args.audio_first_conv, args.audio_resize, args.audio_features,
                                      args.audio_frames, args.audio_weights)
        expect = cache_expectation(args.annotation, args.visual_depth, args.visual_input, args.snippet_duration,
                                   args.sample_size, args.visual_weights, audio=audio)
        return FeatureCache(args.feature_cache, expect=expect)

    def build_model(self, arch: CTENArch, n_classes: int) -> CTEN:
        return CTEN(n_classes, arch.seq_len, modalities=arch.modalities, intra=arch.intra,
                    inter=arch.inter and arch.modalities == "av", temporal_attention=arch.temporal_attention,
                    nonlocal_init=arch.nonlocal_init, inter_direction=arch.inter_direction,
                    visual_depth=arch.visual_depth, visual_input=arch.visual_input,
                    audio_arch=arch.audio_arch, audio_first_conv=arch.audio_first_conv, dropout=arch.dropout,
                    visual_bn=arch.visual_bn, freeze_audio=arch.freeze_audio, audio_resize=arch.audio_resize,
                    attention_w1_init=arch.attention_w1_init)

    def expected_weights(self, args) -> list:
        """The files named in docs/weights.md: the 3D ResNet of --visual-input's scaling, the ImageNet ResNet of
        --audio-arch."""
        expected = []
        if args.modalities != "a":
            expected.append(WeightFlag("visual_weights", f"{visual_weight_file(args.visual_depth, args.visual_input)} "
                                       f"(3D ResNet-{args.visual_depth} for --visual-input {args.visual_input}; "
                                       f"{VISUAL_INPUT_FILES[args.visual_input]})"))
        if args.modalities != "v":
            expected.append(WeightFlag("audio_weights", f"{AUDIO_WEIGHT_FILES.get(args.audio_arch, 'no published file')} "
                                       f"(torchvision's ImageNet {args.audio_arch} state_dict, for --audio-arch "
                                       f"{args.audio_arch})"))
        return expected

    def load_pretrained(self, model: CTEN, args) -> list:
        trusted = args.trust_weights
        flags = {w.dest: w for w in self.expected_weights(args)}
        records = []
        if args.visual_weights and model.visual is not None:
            records.append(load_weight(flags["visual_weights"], args.visual_weights,
                                       lambda: load_resnet3d(args.visual_weights, model.visual, trusted=trusted)))
        if args.audio_weights and model.audio is not None:
            records.append(load_weight(flags["audio_weights"], args.audio_weights,
                                       lambda: load_torchvision_resnet(args.audio_weights, model.audio,
                                                                       trusted=trusted)))
        return records

    def stages(self, args) -> list:
        return [Stage("", args.epochs, method=self.step)]

    def step(self, args, sc: StageContext) -> CTENMethod:
        return CTENMethod(classification_loss(args.loss, sc.polarity, args.pcce_lambda), erase=args.erase,
                          theta=args.theta, rule=args.erase_rule, views=args.erase_views,
                          reduction=args.loss_reduction, erase_audio=args.erase_audio,
                          read_frames=sc.train_data.read_frames if sc.train_data is not None else None,
                          grid_lookup=grid_lookup if args.feature_cache else None, view_passes=args.view_passes,
                          read_views=gpu_view_reader(args, sc.train_data))

    def upgrade_state(self, model_state: dict, fmt: int, arch: dict) -> dict:
        """Format 1 concatenated the streams [audio, visual]; today's order is the release's [visual, audio]: the
        classifier's and the joint attention's input columns swap halves."""
        if fmt >= 2 or arch.get("modalities", "av") != "av":
            return model_state
        state = dict(model_state)
        for key in ("classifier.weight", "attention.w2.weight"):
            if key in state:
                audio, visual = state[key].chunk(2, dim=1)  # (out, 2D) -> two (out, D) halves
                state[key] = torch.cat([visual, audio], dim=1)
        return state

    def predictor(self, args, polarity) -> CTENMethod:
        return self.step(args, StageContext(polarity))


RECIPE = CTENRecipe()
