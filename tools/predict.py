"""Predict the emotion of one video file and find its emotional segments, with a checkpoint written by main.py.

    python tools/predict.py VIDEO --checkpoint runs/cten_demo [--out DIR] [--top 3]
    python tools/predict.py clip.mkv --checkpoint runs/mart_ve8_official/stage2/best.pth --srt clip.srt --device cuda
    python tools/predict.py joy_3.mp4 --checkpoint runs/cten_demo --label Joy --gt-spans data/demo/key_spans.json

The video is decoded in memory with PyAV (nothing but the outputs is written) into the inputs the evaluation
loader (datasets/video_emotion.py) builds from `python tools/preprocess` output, with the checkpoint's T
(eval_seq_len), L (snippet_duration) and S (sample_size):
  frames    the frames on preprocess's constant-rate timeline (tools/preprocess/video.py `decode_on_timeline`:
            frame k is the one on screen k / fps after the first), turned upright and resized to a short side of
            --short-side pixels with the area filter, as preprocess extracts them (default: the short side the
            checkpoint's data root was preprocessed with, read from its .preprocess records when that root is
            here, else 240, preprocess's default); then as the loader reads a JPEG: the power-of-two reduction
            of PIL's JPEG draft and the centre square resized to S. There is no JPEG round trip, so pixels differ
            from the dataset's by the JPEG loss. Two passes over the file: one counts the frames, one keeps the
            T x L sampled ones, so memory does not grow with the video's length.
  sampling  TSN, the centred snippet of each of the T segments (loop-padded below T x L frames, as the loader
            does, with a warning below one snippet); seg_times = segment bounds / fps.
  audio     the first audio stream mixed down to mono at 16 kHz (as preprocess writes it), then the loader's
            per-segment fbank windows (datasets/audio.py). When the model uses audio, a video without an audio
            stream (or without decodable samples) gets silence, with a warning.
  text      methods with a stage that reads transcripts (MART) only, reported per segment (no model reads text
            at inference): --srt, else the sidecar VIDEO.srt, else an embedded text subtitle stream, else speech
            recognition (--asr, default none). Other checkpoints ignore --srt and --asr.

The model is rebuilt from the checkpoint's method and architecture options (core/restore.py, as --eval-only does)
and loaded strictly; --checkpoint takes the file or its run folder (best.pth there, else last.pth). The console shows the top emotions and the emotional segments in seconds, found by the documented rule
of core/detection.py; its options (--det-*) default to the checkpoint's run configuration (opts.py's defaults
unless that run changed them). Writes OUT/<video>.json (probabilities, top-k, segments in the clip's time,
sampled_segments: the rule's proposals in seg_times' time before folding and merging (see fold_segments), attention
curves, segment times, frame indices, transcript texts, the true label and key spans when given, warnings) and
OUT/<video>.png (core/plots.timeline_figure with the middle frame of each snippet, the segments the console lists,
and --label / --gt-spans when given). OUT defaults to <checkpoint folder>/predictions/. Exit status 0, or 2 with a message naming the file and the fix for bad input (VEA_DEBUG=1 shows the
traceback).
"""
import argparse
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from PIL import Image

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import opts  # noqa: E402
from core import methods  # noqa: E402
from core.detection import CLASS_CURVES, detect_batch, fold_detections  # noqa: E402
from core.engine import to_device  # noqa: E402
from core.plots import timeline_figure  # noqa: E402
from datasets.errors import DataError  # noqa: E402
from core.restore import checkpoint_file, load_trained  # noqa: E402
from datasets.audio import SAMPLE_RATE  # noqa: E402
from datasets.frames import IDENTITY_AUG, apply_spatial_aug  # noqa: E402
from datasets.sample import SampleSpec, build_sample  # noqa: E402
from datasets.video_emotion import collate_samples  # noqa: E402
from tools.preprocess.asr import check_engine, transcribe  # noqa: E402
from tools.preprocess.audio import decode_audio  # noqa: E402
from tools.preprocess.subtitles import embedded_subtitles, read_sidecar  # noqa: E402
from tools.preprocess.video import REENCODE_FIX, decode_on_timeline, upright_image  # noqa: E402

DEFAULT_SHORT_SIDE = 240  # tools/preprocess --short-side default
DRAFT_SCALES = (8, 4, 2, 1)  # the reductions PIL's JPEG draft can apply


class PredictWarning(UserWarning):
    """Something about the input the user should know (silence used for missing audio, no transcript, ...)."""


# ------------------------------------------------------------------------------------------------- inputs


def draft_scale(width: int, height: int, size: int) -> int:
    """The reduction PIL's JPEG draft applies when datasets/frames.decode_frame asks for (size, size): the largest
    of 8, 4, 2, 1 not above min(width // size, height // size)."""
    fit = min(width // size, height // size)
    return next(s for s in DRAFT_SCALES if fit >= s)


def loader_view(img: Image.Image, size: int) -> np.ndarray:
    """A frame as the evaluation loader sees its JPEG: the draft's power-of-two box reduction, then the centre
    square resized to size -> uint8 (size, size, 3)."""
    scale = draft_scale(img.width, img.height, size)
    if scale > 1:
        img = img.reduce(scale)  # rounds up like the draft
    return np.asarray(apply_spatial_aug(img, torch.tensor(IDENTITY_AUG), size))


def scan_video(path) -> tuple:
    """Frame count and rate of the first video stream on preprocess's constant-rate timeline
    (tools/preprocess/video.py `decode_on_timeline`), decoding without keeping a frame -> (n_frames, fps).
    Decoding problems are warnings; a file without a video stream or a decodable frame raises DataError."""
    n_frames, fps, notes = decode_on_timeline(Path(path), lambda frame, repeat: None)
    for note in notes:
        warnings.warn(f"{path}: {note}", PredictWarning)
    return n_frames, round(fps, 6)  # as preprocess writes the fps file


def read_timeline_frames(path, wanted, sample_size: int, short_side: int = DEFAULT_SHORT_SIDE) -> dict:
    """The timeline frames `wanted` (indices) as the loader sees their JPEGs -> {index: uint8 (S, S, 3)}; one
    pass over the file holding only those frames, so memory does not grow with the video's length."""
    wanted, frames, k = set(int(i) for i in wanted), {}, 0

    def keep(frame, repeat):
        nonlocal k
        if k in wanted:
            frames[k] = loader_view(upright_image(frame, short_side), sample_size)
        k += 1

    decode_on_timeline(Path(path), keep)
    missing = wanted - frames.keys()
    if missing:
        raise DataError(path, f"the second decoding pass gave {k} frames, fewer than the first; frame(s) "
                        f"{sorted(missing)[:5]} are missing", REENCODE_FIX)
    return frames


def decode_wave(path) -> Optional[torch.Tensor]:
    """The first audio stream as preprocess writes it (16 kHz mono int16) and the loader reads it back -> float32
    (N,) in [-1, 1]; None when the file has no audio stream or no decodable sample."""
    samples, notes = decode_audio(Path(path), SAMPLE_RATE, 1)  # int16 (1, N) or None
    for note in notes:
        warnings.warn(f"{path}: {note}", PredictWarning)
    if samples is None or samples.shape[1] == 0:
        return None
    return torch.from_numpy(samples[0].astype(np.float32) / 32768.0)


def find_cues(path, srt=None, asr: str = "none", wave: Optional[torch.Tensor] = None) -> tuple:
    """Transcript cues and their source: `srt`, else the sidecar <video>.srt, else an embedded text subtitle
    stream, else speech recognition with `asr` on `wave` (16 kHz). -> ([cue with .start .end .text], source | None)."""
    path = Path(path)
    if srt is not None:
        srt = Path(srt)
        if not srt.is_file():
            raise DataError(srt, "transcript file not found", "pass an existing .srt with --srt, or leave --srt out")
        return read_sidecar(srt), "srt"
    sidecar = path.with_suffix(".srt")
    if sidecar.is_file():
        cues = read_sidecar(sidecar)
        if cues:
            return cues, "sidecar"
    cues = embedded_subtitles(path)
    if cues:
        return cues, "embedded"
    if asr == "none" or wave is None:
        return [], None
    pcm = (wave * 32768).round().clamp(-32768, 32767).to(torch.int16).numpy()  # decode_wave's samples back
    return transcribe(pcm, asr, None), asr


def load_video_inputs(path, spec: SampleSpec, short_side: int = DEFAULT_SHORT_SIDE, with_audio: bool = True,
                      with_text: bool = False, srt=None, asr: str = "none") -> dict:
    """One video file -> the evaluation sample dict of datasets/video_emotion.py (see its docstring), built by the
    same datasets/sample.py `build_sample`, without 'label' and 'index' (the file has neither), plus 'sources':
    {'audio': 'stream' | 'silence' | None, 'transcript': 'srt' | 'sidecar' | 'embedded' | <asr engine> | None}.

    Raises DataError (a ValueError naming the file and the fix) for a file that cannot be used; one shorter than
    snippet_duration frames is looped like the loader does, with a warning.
    """
    path = Path(path)
    n_frames, fps = scan_video(path)
    if n_frames < spec.snippet_duration:  # the loader accepts it too (counted in its report)
        warnings.warn(f"{path}: {n_frames} frame(s), shorter than one snippet of {spec.snippet_duration} frames; "
                      "its frames are looped, as in training", PredictWarning)

    def read_visual(fi, aug, g):  # (T, L) -> uint8 (T, 3, L, S, S), only the sampled frames decoded and kept
        frames = read_timeline_frames(path, fi.flatten().tolist(), spec.sample_size, short_side)
        video = torch.from_numpy(np.stack([frames[int(i)] for i in fi.flatten()]))  # (T * L, S, S, 3)
        return {"video": video.view(*fi.shape, *video.shape[1:]).permute(0, 4, 1, 2, 3).contiguous()}

    wave = decode_wave(path) if with_audio or (with_text and asr != "none") else None  # (N,) or None
    sources = {"audio": None, "transcript": None}
    if with_audio:
        sources["audio"] = "stream" if wave is not None else "silence"
        if wave is None:
            warnings.warn(f"{path}: no audio stream with decodable samples; the model gets silence", PredictWarning)
    cues = None
    if with_text:
        cues, sources["transcript"] = find_cues(path, srt, asr, wave)
    sample = build_sample(spec, n_frames, fps, read_visual, training=False, wave=wave, with_audio=with_audio,
                          cues=cues)
    sample.update(video_id=path.stem, sources=sources)
    return sample


# --------------------------------------------------------------------------------------------- checkpoint


def preprocessed_short_side(root) -> Optional[int]:
    """The --short-side a dataset root was preprocessed with, from the first readable preprocess record; None
    when the root or its records are not here."""
    records = Path(root) / ".preprocess" / "records"
    for record in records.glob("*/*.json"):
        try:
            return int(json.loads(record.read_text())["settings"]["short_side"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return None


# ---------------------------------------------------------------------------------------------- prediction


def fold_segments(segments, duration: float) -> list:
    """Detections in the loop-padded time of seg_times -> the clip's own time [0, duration] (core/detection.py
    `fold_detections`), overlapping or touching pieces merged, keeping the highest score. -> [(start, end, score)]
    by start time."""
    pieces = fold_detections(segments, duration)
    merged = []
    for s, e, score in sorted(pieces):
        if merged and s <= merged[-1][1] + 1e-6:
            last = merged[-1]
            merged[-1] = (last[0], max(last[1], e), max(last[2], score))
        else:
            merged.append((s, e, score))
    return merged



def predict(model, method, sample: dict, labels: list, device: torch.device, rule: dict, top: int = 3) -> dict:
    """Runs the method's prediction on one sample -> the JSON record (see the module docstring)."""
    batch = to_device(collate_samples([{k: v for k, v in sample.items() if k != "sources"}]), device)
    with torch.no_grad():
        out = method.predict(model, batch)
    logits = out["logits"].float().cpu()  # (1, C)
    probs = logits.softmax(dim=1)[0]
    # the method's curves (1, T) and the model's per-segment class curves (1, T, C), as the engine records them
    outputs = {c: out[c].float().cpu() for c in (*method.curve_names, *CLASS_CURVES.values()) if c in out}
    curves = {c: v for c, v in outputs.items() if c not in CLASS_CURVES.values()}  # drawn and written
    seg_times = sample["seg_times"]
    detections = detect_batch(outputs, seg_times[None], [sample["video_id"]], logits, **rule)[sample["video_id"]]
    order = probs.argsort(descending=True)[:max(1, top)].tolist()
    n_frames, fps = int(sample["n_frames"]), float(sample["fps"])
    sampled = [(s, e, sc) for s, e, sc, _ in detections]  # in seg_times' (loop-padded) time
    return {
        "video_id": sample["video_id"],
        "pred": labels[order[0]],
        "probs": {c: round(float(p), 6) for c, p in zip(labels, probs)},
        "top": [{"label": labels[i], "prob": round(float(probs[i]), 6)} for i in order],
        "segments": [{"start": s, "end": e, "score": sc} for s, e, sc in fold_segments(sampled, n_frames / fps)],
        "sampled_segments": [{"start": s, "end": e, "score": sc} for s, e, sc in sampled],
        "curves": {c: v[0].tolist() for c, v in curves.items()},
        "seg_times": seg_times.tolist(),
        "frame_indices": sample["frame_indices"].tolist(),
        "n_frames": n_frames,
        "fps": fps,
        "duration": n_frames / fps,
        "texts": sample["texts"],
        "sources": sample["sources"],
        "detection_rule": rule,
    }


def draw(record: dict, sample: dict, labels: list, path) -> np.ndarray:
    """The timeline PNG: the middle frame of each snippet over the attention curves (at seg_times, past the clip's
    duration for a loop-padded clip), the segments the console lists (the clip's time) and the key spans given."""
    times = sample["seg_times"].numpy()
    mid = sample["video"].shape[2] // 2
    thumbs = [(float(t.mean()), sample["video"][j, :, mid].permute(1, 2, 0).numpy()) for j, t in enumerate(times)]
    return timeline_figure(thumbs, times, {k: np.array(v) for k, v in record["curves"].items()},
                           [(s["start"], s["end"], s["score"]) for s in record["segments"]], record["gt_spans"],
                           record["pred"], record["label"] or "(unlabelled)",
                           probs=np.array([record["probs"][c] for c in labels]), class_names=labels,
                           title=record["video"], path=path)


def parse_spans(values, video: Path) -> list:
    """--gt-spans: START-END pairs in seconds ('1.5-3'), or one JSON file {video_id: [[start, end], ...]} (as the
    demo's key_spans.json) read at the video's file stem -> [[start, end], ...]."""
    if not values:
        return []
    if len(values) == 1 and values[0].lower().endswith(".json"):
        path = Path(values[0])
        if not path.is_file():
            raise DataError(path, "key-span file not found", "pass an existing JSON, or START-END pairs in seconds")
        try:
            table = json.loads(path.read_text())
        except ValueError as e:
            raise DataError(path, f"not a JSON file ({e})", "pass {video_id: [[start, end], ...]}") from None
        if video.stem not in table:
            raise DataError(path, f"no entry {video.stem!r} (the video's file name without extension)",
                            "add it, or pass the spans as START-END pairs")
        values = [f"{s}-{e}" for s, e in table[video.stem]]
    spans = []
    for v in values:
        try:
            s, e = (float(x) for x in str(v).split("-", 1))
        except ValueError:
            raise ValueError(f"--gt-spans {v!r}: expected START-END in seconds (e.g. 1.5-3) or a JSON file") from None
        if not 0 <= s < e:
            raise ValueError(f"--gt-spans {v!r}: needs 0 <= start < end")
        spans.append([s, e])
    return spans


def output_path(out: Path, video: Path) -> Path:
    """OUT/<stem>.json, or OUT/<stem>_2.json, _3, ... when that name already holds another input's result (two
    videos of one name from different folders never overwrite each other; the same input is rewritten)."""
    source = str(video.resolve())
    for k in range(1, 10 ** 6):
        path = out / (f"{video.stem}.json" if k == 1 else f"{video.stem}_{k}.json")
        if not path.is_file():
            return path
        try:
            if json.loads(path.read_text()).get("source") == source:
                return path
        except (OSError, ValueError):
            continue
    raise OSError(f"{out} holds too many results named {video.stem}*.json; pass another --out")


def summary(record: dict) -> str:
    sources = "".join(f"; {k}: {v or 'none'}" for k, v in record["sources"].items()
                      if v is not None or (k == "transcript" and record["reads_text"]))
    lines = [f"{record['video']}: {record['n_frames']} frames at {record['fps']:g} fps ({record['duration']:.2f} s); "
             f"{record['method']} checkpoint, {len(record['seg_times'])} segments{sources}",
             "top emotions: " + ", ".join(f"{t['label']} {t['prob']:.3f}" for t in record["top"])
             + (f" (true: {record['label']})" if record.get("label") else ""),
             "emotional segments (start - end seconds, score):"]
    lines += [f"  {s['start']:7.2f} - {s['end']:7.2f}  {s['score']:.3f}" for s in record["segments"]] or ["  none"]
    if record.get("gt_spans"):
        lines.append("key spans given: " + ", ".join(f"{s:.2f} - {e:.2f}" for s, e in record["gt_spans"]))
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python tools/predict.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("video", type=Path, help="video file (any container FFmpeg reads)")
    p.add_argument("--checkpoint", type=Path, required=True,
                   help="best.pth or last.pth written by main.py, or its run folder (best.pth there, else last.pth)")
    p.add_argument("--out", type=Path, default=None,
                   help="output folder (default: <checkpoint folder>/predictions)")
    p.add_argument("--label", default=None, help="the video's true class, drawn and recorded beside the prediction")
    p.add_argument("--gt-spans", nargs="+", default=None, metavar="SPAN",
                   help="key spans drawn on the timeline: START-END seconds (e.g. 1.5-3 4-5.2), or a JSON file "
                        "{video_id: [[start, end], ...]} such as data/demo/key_spans.json, read at the file's stem")
    p.add_argument("--top", type=int, default=3, help="emotions to list (default: %(default)s)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                   help="auto: cuda when available (default: %(default)s)")
    p.add_argument("--short-side", type=int, default=None,
                   help="frame short side before cropping, as preprocess --short-side (default: the checkpoint "
                        f"data's, else {DEFAULT_SHORT_SIDE})")
    p.add_argument("--srt", type=Path, default=None, help="transcript (MART checkpoints; default: sidecar VIDEO.srt, "
                   "else embedded subtitles, else --asr)")
    p.add_argument("--asr", choices=["none", "pocketsphinx"], default="none",
                   help="speech recognition when a MART checkpoint's video has no transcript (default: %(default)s)")
    g = p.add_argument_group("detection rule (core/detection.py; default: the checkpoint run's setting)")
    opts.add_detection_options(g)
    for action in g._group_actions:
        action.default = argparse.SUPPRESS
    return p


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available here; use --device cpu")
    return torch.device("cuda" if name == "cuda" or (name == "auto" and torch.cuda.is_available()) else "cpu")


def run(cli: argparse.Namespace) -> int:
    if cli.top < 1:
        raise ValueError(f"--top must be >= 1, got {cli.top}")
    if cli.short_side is not None and cli.short_side < 0:
        raise ValueError(f"--short-side must be >= 0 (0 keeps the size), got {cli.short_side}")
    if not cli.video.is_file():
        raise DataError(cli.video, "video file not found", "check the path")
    if cli.asr != "none":
        check_engine(cli.asr, None)
    device = resolve_device(cli.device)
    gt_spans = parse_spans(cli.gt_spans, cli.video)
    det = {k: v for k, v in vars(cli).items() if k.startswith("det_")}
    checkpoint = checkpoint_file(cli.checkpoint)
    model, method, args, labels, _ = load_trained(checkpoint, device, overrides=det)
    if cli.label is not None and cli.label not in labels:
        raise ValueError(f"--label {cli.label!r} is not a class of this checkpoint ({', '.join(labels)})")
    short_side = cli.short_side
    if short_side is None:
        short_side = (preprocessed_short_side(args.root) if args.root else None) or DEFAULT_SHORT_SIDE
    recipe = methods.get(args.method)
    with_text = any(stage.text for stage in recipe.stages(args))  # reported per segment; no model reads it
    if not with_text and (cli.srt is not None or cli.asr != "none"):
        print(f"note: {args.method} does not read text; --srt / --asr are ignored")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", PredictWarning)
        spec = SampleSpec(seq_len=args.eval_seq_len, snippet_duration=args.snippet_duration,
                          sample_size=args.sample_size, audio_frames=args.audio_frames,
                          audio_features=args.audio_features)
        sample = load_video_inputs(cli.video, spec, short_side, with_audio=recipe.inputs(args)["audio"],
                                   with_text=with_text, srt=cli.srt, asr=cli.asr)
    notes = [str(w.message) for w in caught]
    for note in notes:
        print(f"warning: {note}", file=sys.stderr)
    record = {"video": cli.video.name, "source": str(cli.video.resolve()), "checkpoint": str(checkpoint),
              "method": args.method, "labels": labels, "label": cli.label, "gt_spans": gt_spans,
              "reads_text": with_text,
              "short_side": short_side,
              **predict(model, method, sample, labels, device, opts.detection_rule(args), cli.top),
              "warnings": notes}
    out = cli.out if cli.out is not None else checkpoint.parent / "predictions"
    out.mkdir(parents=True, exist_ok=True)
    json_path = output_path(out, cli.video)
    png_path = json_path.with_suffix(".png")
    json_path.write_text(json.dumps(record, indent=1))
    draw(record, sample, labels, png_path)
    print(summary(record))
    print(f"wrote {json_path} and {png_path}")
    return 0


def main(argv=None) -> int:
    cli = build_parser().parse_args(argv)
    try:
        return run(cli)
    except (ValueError, OSError) as e:  # DataError, CheckpointError, missing files
        if os.environ.get("VEA_DEBUG"):
            raise
        print(f"error: {e}\n(set VEA_DEBUG=1 for the traceback)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
