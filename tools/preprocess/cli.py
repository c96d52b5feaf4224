"""Command line of `python tools/preprocess`: source videos -> the official VE-8/Ekman-6 layout + annotation JSON."""
import argparse
import os
import shutil
import sys
from pathlib import Path

from datasets.errors import DataError

from .annotations import DUPLICATES, annotation_json, parse_ratio, split_from_lists, stratified_split, write_json
from .asr import ENGINES, check_engine
from .guard import output_lock
from .layout import AUDIO_FORMATS, Video
from .pipeline import Result, process_all
from .report import summary_lines, write_report
from .sources import VIDEO_EXTS, find_videos

DESCRIPTION = """\
Turn a folder of videos SRC/<Class>/<video_id>.<ext> (any container FFmpeg reads, decoded with PyAV)
into the layout of the official CTEN/MART/VAANet releases:
  DST/imgs/<Class>/<video_id>/000001.jpg ...  frames, plus the files n_frames and fps
  DST/mp3/<Class>/<video_id>.wav|.mp3         audio (16 kHz mono wav by default)
  DST/srt/<Class>/<video_id>.srt              transcript: a sidecar SRC/<Class>/<video_id>.srt, else an
                                              embedded text subtitle stream, else speech recognition (--asr)
  DST/<json>                                  annotation JSON from --split-lists or --ratio
Frames lie on a constant-rate timeline (the rate in fps): frame k is what shows k / fps seconds after the
first, so variable-frame-rate video gets frames repeated or dropped (a warning). Transcript cues past the
video's end are cut; speech recognition runs only where a voice-activity check finds possible speech.
A video without an audio stream gets frames and no audio file (a warning); one without speech gets no
transcript (counted apart, not a warning). Finished videos are verified and skipped on a second run, also when only
--asr / --whisper-model changed (said; --force redoes them); other changed settings redo them (said);
bookkeeping lives in DST/.preprocess/ (records, work in progress, report.json).
A run holds DST/.preprocess/lock: a second run on the same DST stops with a message. Worker processes end
with the run (also when it is killed); a killed run's half-written videos are redone by the next run.
Exit status: 0 when every video was processed, 1 when some failed (0 with --keep-going), 2 on bad arguments."""


LOCK = Path(".preprocess") / "lock"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python tools/preprocess", description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--src", type=Path, required=True, help="folder of <Class>/<video_id>.<ext> videos")
    p.add_argument("--dst", type=Path, required=True, help="dataset root to write (created if missing)")
    g = p.add_argument_group("annotation JSON (one of)")
    split = g.add_mutually_exclusive_group()
    split.add_argument("--split-lists", type=Path, metavar="DIR",
                       help="folder with classInd.txt, trainlist<SPLIT>.txt, testlist<SPLIT>.txt (official format)")
    split.add_argument("--ratio", metavar="TRAIN:TEST",
                       help="draw a stratified split of the found videos instead, e.g. 2:1 (classes sorted by name)")
    g.add_argument("--split", default="01", help="split number of the lists to read (default: %(default)s)")
    g.add_argument("--duplicate-ids", choices=DUPLICATES, default="refuse",
                   help="a video id listed more than once in the split lists: stop (a JSON entry holds one label), "
                        "or keep its last entry as the official VE-8 JSON does (default: %(default)s)")
    g.add_argument("--seed", type=int, default=0, help="seed of the --ratio split (default: %(default)s)")
    g.add_argument("--json", default="ve8.json",
                   help="annotation file name, relative to DST unless absolute (default: %(default)s)")
    g = p.add_argument_group("frames")
    g.add_argument("--short-side", type=int, default=240,
                   help="resize so the short side has this many pixels, 0 keeps the size (default: %(default)s)")
    g.add_argument("--jpeg-quality", type=int, default=90, help="JPEG quality 1-95 (default: %(default)s)")
    g = p.add_argument_group("audio")
    g.add_argument("--audio-format", choices=AUDIO_FORMATS, default="wav", help="(default: %(default)s)")
    g.add_argument("--sample-rate", type=int, default=16000, help="Hz (default: %(default)s)")
    g.add_argument("--channels", type=int, choices=(1, 2), default=1, help="(default: %(default)s)")
    g = p.add_argument_group("transcripts")
    g.add_argument("--asr", choices=ENGINES, default="pocketsphinx",
                   help="offline speech recognition for videos with neither a sidecar .srt nor embedded "
                        "subtitles (default: %(default)s; whisper needs --whisper-model)")
    g.add_argument("--whisper-model", type=Path, metavar="PATH",
                   help="local Hugging Face Whisper model folder (nothing is downloaded)")
    g = p.add_argument_group("run")
    g.add_argument("--exts", default=",".join(VIDEO_EXTS),
                   help="video file extensions to take from SRC (default: %(default)s)")
    g.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                   help="parallel processes, 1 runs in this process (default: the number of CPUs, %(default)s)")
    g.add_argument("--force", action="store_true", help="redo finished videos too")
    g.add_argument("--keep-going", action="store_true", help="exit 0 even if some videos failed")
    return p


def check_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.short_side < 0:
        p.error("--short-side must be >= 0")
    if not 1 <= args.jpeg_quality <= 95:
        p.error("--jpeg-quality must be in 1..95")
    if args.sample_rate <= 0:
        p.error("--sample-rate must be positive")
    if args.workers < 1:
        p.error("--workers must be >= 1")
    try:
        if args.ratio:
            parse_ratio(args.ratio)
        check_engine(args.asr, args.whisper_model)
    except ValueError as e:
        p.error(str(e))


def settings_of(args: argparse.Namespace) -> dict:
    """Everything that changes the outputs; a finished video made with other settings is redone. "frames" names
    how frames are laid out in time: "timeline" (by presentation time, since issue 12; records without it were
    written in decode order and are redone)."""
    return {"frames": "timeline", "short_side": args.short_side, "jpeg_quality": args.jpeg_quality, "audio_format": args.audio_format,
            "sample_rate": args.sample_rate, "channels": args.channels, "asr": args.asr,
            "whisper_model": str(args.whisper_model.resolve()) if args.whisper_model else None}


def entries_from_lists(listed: dict, results: list[Result], notes: list[str]) -> dict:
    """Listed videos whose outputs exist under the listed class; every other case becomes a note."""
    found: dict[str, dict[str, Result]] = {}
    for r in results:
        found.setdefault(r.video.video_id, {})[r.video.label] = r
    entries = {}
    for video_id, (label, subset) in listed.items():
        here = found.get(video_id, {})
        if label in here and here[label].status != "failed":
            entries[video_id] = (label, subset)
        elif label in here:
            notes.append(f"{label}/{video_id} failed and is left out of the JSON")
        elif here:
            notes.append(f"{label}/{video_id} is listed as {label} but found under {', '.join(sorted(here))}/; "
                         f"left out of the JSON (move the video into {label}/)")
        else:
            notes.append(f"{label}/{video_id} is listed but has no source video; left out of the JSON")
    notes += [f"{r.video.src} is not in the split lists: processed but left out of the JSON"
              for r in results if r.video.video_id not in listed]
    return entries


def labels_by_id(videos: list[Video]) -> dict[str, str]:
    """{video_id: class}; an id under two classes raises DataError (a JSON entry has one label)."""
    labels: dict[str, str] = {}
    for v in videos:
        if labels.setdefault(v.video_id, v.label) != v.label:
            raise DataError(v.src, f"video id {v.video_id!r} is also under {labels[v.video_id]}/, "
                                   "and a JSON entry has one label", "rename or remove one of the two")
    return labels


def entries_from_ratio(labels: dict[str, str], results: list[Result], ratio: str, seed: int) -> dict:
    """A stratified split over all found videos (so a failure does not reshuffle it); failures left out."""
    subsets = stratified_split(labels, parse_ratio(ratio), seed)
    return {r.video.video_id: (r.video.label, subsets[r.video.video_id]) for r in results if r.status != "failed"}


def run(args: argparse.Namespace) -> int:
    notes: list[str] = []
    labels, listed = None, None
    if args.split_lists:
        labels, listed, notes = split_from_lists(args.split_lists, args.split, args.duplicate_ids)
    exts = tuple(e.strip().lstrip(".").lower() for e in args.exts.split(",") if e.strip())
    videos, ignored = find_videos(args.src, exts)
    if ignored:
        notes.append(f"{len(ignored)} files in the class folders are not videos with ext in --exts and were "
                     f"ignored, e.g. {ignored[0]}")
    ids = labels_by_id(videos) if args.ratio else None  # fails on ambiguous ids before any work

    args.dst.mkdir(parents=True, exist_ok=True)
    with output_lock(args.dst / LOCK):
        return finish(args, videos, labels, listed, ids, notes)


def finish(args: argparse.Namespace, videos: list[Video], labels, listed, ids, notes: list[str]) -> int:
    """Process the videos and write the JSON and report; runs under the output folder's lock."""
    shutil.rmtree(args.dst / ".preprocess" / "tmp", ignore_errors=True)  # a killed run's work in progress
    results = process_all(videos, args.dst.resolve(), settings_of(args), args.workers, args.force)

    json_path = Path(args.json) if Path(args.json).is_absolute() else args.dst / args.json
    written = f"; annotations: {json_path}"
    if listed is not None:
        write_json(annotation_json(labels, entries_from_lists(listed, results, notes)), json_path)
        written += f" (split {args.split} of {args.split_lists})"
    elif args.ratio:
        labels = sorted({v.label for v in videos})
        write_json(annotation_json(labels, entries_from_ratio(ids, results, args.ratio, args.seed)), json_path)
        written += f" ({args.ratio} stratified split, seed {args.seed})"
    else:
        notes.append("no --split-lists or --ratio: no annotation JSON was written")
        written = ""

    print("\n".join(summary_lines(results, notes)))
    report = args.dst / ".preprocess" / "report.json"
    write_report(results, notes, report)
    print(f"report: {report}{written}")
    failed = any(r.status == "failed" for r in results)
    return 1 if failed and not args.keep_going else 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_args(parser, args)
    try:
        return run(args)
    except DataError as e:
        print(f"error: {e.path}: {e.why}\n  fix: {e.fix}", file=sys.stderr)
        return 2
