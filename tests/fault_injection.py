"""Fault injection (issue 12): make odd media and bad files, run the command lines on them, print a table.

    python tests/fault_injection.py [--work DIR] [--only CASE,...] [--keep]

Each case builds its input under --work (a fresh temporary folder by default), runs the real command
(`python tools/preprocess`, a DataLoader, `tools/extract_features.py`) and compares what happens with what
should. The table has one row per case: case, expected, observed, PASS/FAIL; the exit status is 1 when a
case fails. Every case also has a focused test in tests/test_faults.py. Runs on 2 CPU cores in a few minutes.
"""
import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable, Optional

import av
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SAMPLE_RATE = 16000


# ------------------------------------------------------------------------------------------------ media


def write_clip(path: Path, seconds: float, fps: float = 10.0, size: tuple = (64, 48), audio="tone",
               frame_times: Optional[np.ndarray] = None) -> None:
    """A clip of `seconds` (mpeg4 video; AAC audio in .mp4, 16-bit PCM in .mkv): frame k shows a flat grey of level
    (10 * k) % 250 in its top half and round(t) * 20 % 250 in its bottom half, so a frame can be read back.

    frame_times: presentation times in seconds (variable frame rate; default k / fps). audio: 'tone' (a 440 Hz
    sine), 'silence' (zeros), 'bursts' (white noise switched on and off, no speech), int16 samples (N,) at
    16 kHz, or None (no audio stream).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    times = np.arange(int(round(seconds * fps))) / fps if frame_times is None else np.asarray(frame_times)
    tick = 1000  # time base 1/tick s, so any presentation time can be written
    with av.open(str(path), "w") as c:
        vs = c.add_stream("mpeg4", rate=tick)
        vs.width, vs.height, vs.pix_fmt = size[0], size[1], "yuv420p"
        vs.bit_rate = 4_000_000  # near lossless: the levels that mark each frame survive
        aus = None
        if audio is not None:
            aus = c.add_stream("pcm_s16le" if path.suffix == ".mkv" else "aac", rate=SAMPLE_RATE, layout="mono")
        for k, t in enumerate(times):
            img = np.empty((size[1], size[0], 3), np.uint8)
            img[: size[1] // 2] = (10 * k) % 250
            img[size[1] // 2:] = round(float(t)) * 20 % 250
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = int(round(float(t) * tick))
            frame.time_base = Fraction(1, tick)
            c.mux(vs.encode(frame))
        c.mux(vs.encode(None))
        if aus is not None:
            wave = clip_audio(audio, int(SAMPLE_RATE * seconds))
            for start in range(0, wave.size, 1024 * 64):
                frame = av.AudioFrame.from_ndarray(wave[None, start:start + 1024 * 64], format="s16", layout="mono")
                frame.sample_rate, frame.pts = SAMPLE_RATE, start
                c.mux(aus.encode(frame))
            c.mux(aus.encode(None))


def clip_audio(audio, n: int) -> np.ndarray:
    """int16 (n,) samples of write_clip's `audio` kinds."""
    if isinstance(audio, np.ndarray):
        return np.pad(audio.astype(np.int16), (0, max(0, n - audio.size)))[:n]
    t = np.arange(n) / SAMPLE_RATE
    if audio == "tone":
        wave = 0.3 * np.sin(2 * np.pi * 440 * t)
    elif audio == "bursts":  # no speech, but PocketSphinx's own segmenter takes it for speech
        wave = 0.1 * np.random.default_rng(0).standard_normal(n) * (np.sin(2 * np.pi * 0.5 * t) > 0.3)
    else:
        wave = np.zeros(n)
    return (wave * 32767).astype(np.int16)


def babble(seconds: float, seed: int = 0, amplitude: int = 6000) -> np.ndarray:
    """Speech-like int16 (N,) at 16 kHz, no words: syllables of a glottal pulse train (or noise, for fricatives)
    through three formant resonators, with gaps and pauses. Enough for a recogniser to output something."""
    from scipy.signal import lfilter  # scipy comes with librosa

    rng, out = np.random.default_rng(seed), np.zeros(int(SAMPLE_RATE * seconds))
    pos = int(0.3 * SAMPLE_RATE)
    while pos < out.size - SAMPLE_RATE // 4:
        n = min(int(SAMPLE_RATE * rng.uniform(0.12, 0.3)), out.size - pos)
        source = np.zeros(n)
        source[::int(SAMPLE_RATE / rng.uniform(100, 220))] = 1.0
        if rng.random() < 0.3:
            source = rng.standard_normal(n) * 0.3
        y = source
        for formant, bandwidth in ((rng.uniform(300, 900), 80), (rng.uniform(900, 2500), 120),
                                   (rng.uniform(2400, 3200), 200)):
            r, theta = np.exp(-np.pi * bandwidth / SAMPLE_RATE), 2 * np.pi * formant / SAMPLE_RATE
            y = lfilter([1 - r], [1, -2 * r * np.cos(theta), r * r], y)
        y = y * np.hanning(n)
        out[pos:pos + n] += y / np.abs(y).max()
        pos += n + int(SAMPLE_RATE * rng.uniform(0.02, 0.15))
        if rng.random() < 0.15:
            pos += int(SAMPLE_RATE * rng.uniform(0.3, 0.8))
    return (out * amplitude).astype(np.int16)


def order_dependent_pair() -> tuple[np.ndarray, np.ndarray]:
    """Two clips A (4 s) and B (6 s, noisy) for which a PocketSphinx decoder that keeps its state from B
    recognises A differently than a fresh one ('it' instead of 'the', pocketsphinx 5.1.1)."""
    rng = np.random.default_rng(0)
    a = babble(4, seed=100, amplitude=int(rng.uniform(1000, 12000)))
    b = babble(6, seed=200, amplitude=int(rng.uniform(1000, 15000))) + rng.normal(0, rng.uniform(50, 2000), 96000)
    return a, b.astype(np.int16)


# ------------------------------------------------------------------------------------------------ cases


@dataclass
class Outcome:
    expected: str
    observed: str
    ok: bool


def preprocess_cmd(src: Path, dst: Path, *extra: str) -> list[str]:
    return [sys.executable, str(ROOT / "tools" / "preprocess"), "--src", str(src), "--dst", str(dst),
            "--short-side", "32", "--ratio", "1:1", *extra]


def run_cmd(cmd: list[str], timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)


def proc_state(pid: int) -> Optional[tuple[str, int]]:
    """(state letter, parent pid) of a process from Linux /proc, None when there is no such process."""
    try:
        state, ppid = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[:2]
    except OSError:
        return None
    return state, int(ppid)


def is_alive(pid: int) -> bool:
    """Running or sleeping, not a zombie."""
    state = proc_state(pid)
    return state is not None and state[0] != "Z"


def live_children(pid: int) -> list[int]:
    """Live processes whose parent is `pid`."""
    return [int(e.name) for e in Path("/proc").iterdir()
            if e.name.isdigit() and (proc_state(int(e.name)) or ("Z", 0))[1] == pid and is_alive(int(e.name))]


def case_killed_preprocess(work: Path, sig: signal.Signals) -> Outcome:
    """preprocess --workers 2 killed mid-run: its workers end with it, and a re-run completes every video."""
    from datasets.frames import count_frames

    src, dst = work / "src", work / "data"
    for k in range(4):
        write_clip(src / ("Joy" if k % 2 else "Fear") / f"v{k}.mp4", 12, size=(160, 120))
    cmd = preprocess_cmd(src, dst, "--workers", "2", "--asr", "none")
    run = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while len(workers := live_children(run.pid)) < 2 and time.time() < deadline and run.poll() is None:
        time.sleep(0.05)
    time.sleep(0.3)
    run.send_signal(sig)
    run.wait()
    time.sleep(2.0)
    survivors = [w for w in workers if is_alive(w)]
    for w in survivors:
        os.kill(w, signal.SIGKILL)
    again = run_cmd(cmd)
    counts = []
    for k in range(4):
        try:
            counts.append(count_frames(dst / "imgs" / ("Joy" if k % 2 else "Fear") / f"v{k}"))
        except ValueError as e:
            counts.append(str(e)[:60])
    observed = (f"{len(survivors)} of {len(workers)} workers alive 2 s later; re-run exit {again.returncode}, "
                f"frames {counts}")
    return Outcome("0 workers alive; re-run exit 0, frames [120]*4", observed,
                   not survivors and len(workers) >= 2 and again.returncode == 0 and counts == [120] * 4)


def case_second_run_locked(work: Path) -> Outcome:
    from tools.preprocess.guard import output_lock

    src, dst = work / "src", work / "data"
    write_clip(src / "Joy" / "a.mp4", 1)
    with output_lock(dst / ".preprocess" / "lock"):
        second = run_cmd(preprocess_cmd(src, dst, "--workers", "1", "--asr", "none"))
    line = second.stderr.strip().splitlines()[0] if second.stderr.strip() else ""
    ok = second.returncode == 2 and "lock" in line and "another preprocess run" in line
    return Outcome("exit 2, message naming DST/.preprocess/lock", f"exit {second.returncode}: {line[:110]}", ok)


def tiny_dataset(work: Path) -> Path:
    """Two preprocessed clips per class (a 1:1 split) under work/data; returns the root."""
    src, dst = work / "src", work / "data"
    for cls in ("Fear", "Joy"):
        for k in range(2):
            write_clip(src / cls / f"{cls.lower()}{k}.mp4", 2, fps=10)
    result = run_cmd(preprocess_cmd(src, dst, "--workers", "1", "--asr", "none"))
    if result.returncode != 0:
        raise RuntimeError(result.stdout + result.stderr)
    return dst


def case_bad_jpeg_in_workers(work: Path) -> Outcome:
    """A zero-byte JPEG read by tools/extract_features.py: the same one-line message and exit 2 with and without
    DataLoader worker processes."""
    root = tiny_dataset(work)
    for jpg in (root / "imgs" / "Fear" / "fear0").glob("*.jpg"):
        jpg.write_bytes(b"")
    results = {}
    for workers in (0, 2):
        r = run_cmd([sys.executable, str(ROOT / "tools" / "extract_features.py"), "--root", str(root),
                     "--annotation", str(root / "ve8.json"), "--out", str(work / f"cache{workers}"),
                     "--visual-depth", "10", "--snippet-duration", "4", "--sample-size", "32", "--crops", "centre",
                     "--workers", str(workers), "--device", "cpu", "--no-progress"])
        results[workers] = (r.returncode, r.stderr.strip().splitlines()[-1] if r.stderr.strip() else "")
    same = results[0] == results[2]
    return Outcome("exit 2 and the same 'error: <jpg>: cannot decode JPEG' line with --workers 0 and 2",
                   f"workers 0: exit {results[0][0]}; workers 2: exit {results[2][0]}: {results[2][1][:80]}",
                   same and results[2][0] == 2 and "cannot decode JPEG" in results[2][1])


def case_half_written_folder(work: Path) -> Outcome:
    """A frame folder missing its first frames (a killed writer) is refused by the loader, and redone by a
    re-run of preprocess."""
    from datasets.frames import count_frames

    root = tiny_dataset(work)
    folder = root / "imgs" / "Joy" / "joy1"
    for k in range(1, 6):
        (folder / f"{k:06d}.jpg").unlink()
    try:
        count_frames(folder)
        refused = "accepted"
    except ValueError as e:
        refused = str(e).split(": ", 1)[1][:70]
    again = run_cmd(preprocess_cmd(work / "src", root, "--workers", "1", "--asr", "none"))
    redone = "1 processed" in again.stdout
    return Outcome("loader refuses it; re-run redoes 1 video", f"loader: {refused}; re-run: "
                   f"{'1 processed' if redone else again.stdout.strip().splitlines()[-2:]}",
                   refused != "accepted" and redone)


def case_asr_order(work: Path) -> Outcome:
    """The same file recognised after another one (one worker) and alone (two workers) gives one transcript."""
    a, b = order_dependent_pair()
    src = work / "src"
    write_clip(src / "Fear" / "b.mkv", 6, audio=b)  # sorted first: a single worker recognises b, then a
    write_clip(src / "Joy" / "a.mkv", 4, audio=a)
    texts = {}
    for workers in (1, 2):
        dst = work / f"data{workers}"
        r = run_cmd(preprocess_cmd(src, dst, "--workers", str(workers), "--asr", "pocketsphinx"))
        srt = dst / "srt" / "Joy" / "a.srt"
        texts[workers] = srt.read_text().strip().splitlines()[-1] if srt.is_file() else f"(none, exit {r.returncode})"
    return Outcome("the same transcript of a with --workers 1 and 2",
                   f"workers 1: {texts[1]!r}; workers 2: {texts[2]!r}", texts[1] == texts[2])


def case_long_no_speech(work: Path) -> Outcome:
    """A 10-minute 30 fps clip whose audio is noise bursts (no speech), recognition on: under a minute."""
    src = work / "src"
    write_clip(src / "Joy" / "long.mp4", 600, fps=30, size=(160, 120), audio="bursts")
    start = time.perf_counter()
    r = run_cmd(preprocess_cmd(src, work / "data", "--workers", "2", "--asr", "pocketsphinx", "--short-side", "128"))
    seconds = time.perf_counter() - start
    skipped = "voice-activity check found no speech" in r.stdout
    return Outcome("< 60 s, recognition skipped", f"{seconds:.1f} s, exit {r.returncode}, "
                   f"{'skipped' if skipped else 'recognised'}", seconds < 60 and skipped and r.returncode == 0)


def case_vfr(work: Path) -> Outcome:
    """A clip at 10 fps for 3 s then 30 fps for 3 s: frame k of the folder shows what is on screen at k / fps."""
    from PIL import Image

    times = np.concatenate([np.arange(0, 3, 1 / 10), 3 + np.arange(0, 3, 1 / 30)])
    write_clip(work / "src" / "Joy" / "vfr.mp4", 6, frame_times=times, size=(32, 24))
    run_cmd(preprocess_cmd(work / "src", work / "data", "--workers", "1", "--asr", "none", "--short-side", "0"))
    folder = work / "data" / "imgs" / "Joy" / "vfr"
    n, fps = int((folder / "n_frames").read_text()), float((folder / "fps").read_text())
    worst = 0.0
    for j in range(n):
        k = round(np.asarray(Image.open(folder / f"{j + 1:06d}.jpg"))[:4, :, 0].mean() / 10) % 25
        candidates = [i for i in range(len(times)) if i % 25 == k]
        worst = max(worst, min(abs(times[i] - j / fps) for i in candidates))
    return Outcome("fps 30, 180 frames, |shown time - k / fps| < 0.1 s",
                   f"fps {fps:g}, {n} frames, worst {worst:.3f} s", fps == 30 and n == 180 and worst < 0.1)


def case_sidecar(work: Path) -> Outcome:
    src = work / "src" / "Joy" / "a.mp4"
    write_clip(src, 1.0)
    src.with_suffix(".srt").write_text("1\n00:00:00,100 --> 00:00:00,500\nhello\n\nno timing here\n\n"
                                       "3\n00:00:00,800 --> 00:00:02,000\nrunning over\n")
    r = run_cmd(preprocess_cmd(src.parents[1], work / "data", "--workers", "1", "--asr", "none"))
    srt = (work / "data" / "srt" / "Joy" / "a.srt").read_text()
    warned = "1 of 3 blocks have no valid timing line" in r.stdout and "run past the video's end" in r.stdout
    clipped = "00:00:00,800 --> 00:00:01,000" in srt
    return Outcome("garbage block and overlong cue warned; cue cut at 1.000 s",
                   f"warned: {warned}; written cue: {srt.strip().splitlines()[-2]}", warned and clipped)


def case_loader_messages(work: Path) -> Outcome:
    """A video shorter than one snippet is reported; the missing-audio hint names the flag and both names."""
    from datasets.errors import DataError
    from datasets.video_emotion import VideoEmotionDataset

    root = tiny_dataset(work)  # 2 s at 10 fps: 20 frames
    ds = VideoEmotionDataset(root, root / "ve8.json", "train", seq_len=2, snippet_duration=32, with_audio=False,
                             val_fraction=0.0)
    short = "shorter than one snippet" in ds.report()
    for wav in (root / "mp3").rglob("*.wav"):
        wav.unlink()
    hint = "no error"
    try:
        VideoEmotionDataset(root, root / "ve8.json", "train", val_fraction=0.0)
    except DataError as e:
        hint = e.fix if ".mp3|.wav" in e.why else f"(names {e.why[:40]})"
    return Outcome("short video reported; hint '--missing-audio zeros', names <id>.mp3|.wav",
                   f"reported: {short}; hint: {hint[:70]}", short and "--missing-audio zeros" in hint)


def case_nan_audio(work: Path) -> Outcome:
    from datasets.errors import DataError
    from datasets.audio import decode_audio

    wave = np.sin(np.arange(16000) / 10).astype(np.float32)
    wave[100:110] = np.nan
    path = work / "nan.wav"
    with av.open(str(path), "w") as c:
        stream = c.add_stream("pcm_f32le", rate=SAMPLE_RATE, layout="mono")
        frame = av.AudioFrame.from_ndarray(wave[None], format="flt", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            c.mux(packet)
    try:
        decode_audio(path)
        observed = "no error"
    except DataError as e:
        observed = f"{Path(e.path).name}: {e.why}"
    return Outcome("DataError naming nan.wav", observed, observed.startswith("nan.wav: ") and "NaN" in observed)


def random_checkpoint(work: Path, labels: list) -> Path:
    """A CTEN checkpoint as main.py writes them (random weights, demo-size architecture) for tools/predict.py."""
    import opts
    from core import checkpoint as ckpt
    from core import methods
    from core.restore import checkpoint_record

    args = opts.parse_args(["--preset", "cten_demo", "--root", str(work), "--positive-classes", labels[-1]])
    recipe = methods.get(args.method)
    model = recipe.build_model(recipe.arch_of(args), len(labels))
    path = work / "best.pth"
    ckpt.save_checkpoint(path, model=model.state_dict(), epoch=0, **checkpoint_record(args, recipe, labels, ""))
    return path


def peak_rss_mb(cmd: list[str]) -> tuple[float, int]:
    """Runs cmd; -> (its peak resident memory in MB, exit status)."""
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_maxrss / 1024, proc.returncode


def case_predict_memory(work: Path) -> Outcome:
    """tools/predict.py on a 10-minute clip peaks within 2x of a 6-second one (frames are not all kept)."""
    ckpt = random_checkpoint(work, ["Anger", "Joy"])
    peaks = {}
    for name, seconds in (("short", 6), ("long", 600)):
        clip = work / f"{name}.mp4"
        write_clip(clip, seconds, fps=30, size=(160, 120))
        peaks[name], rc = peak_rss_mb([sys.executable, "tools/predict.py", str(clip), "--checkpoint", str(ckpt),
                                       "--out", str(work / "out"), "--device", "cpu"])
        if rc != 0:
            return Outcome("exit 0", f"{name}: exit {rc}", False)  # run it by hand to see the message
    ratio = peaks["long"] / peaks["short"]
    return Outcome("10-min peak <= 2x 6-s peak", f"6 s: {peaks['short']:.0f} MB, 10 min: {peaks['long']:.0f} MB "
                   f"({ratio:.2f}x)", ratio <= 2.0)


def case_run_directory(work: Path) -> Outcome:
    """A second training run of the same name, and --resume with a changed lr, are refused; nothing is rewritten."""
    data = tiny_dataset(work)
    base = [sys.executable, "main.py", "--preset", "cten_demo", "--root", str(data), "--annotation",
            str(data / "ve8.json"), "--seq-len", "2", "--snippet-duration", "2", "--sample-size", "16",
            "--batch-size", "2", "--workers", "0", "--val-fraction", "0", "--epochs", "1", "--no-progress",
            "--positive-classes", "Joy", "--output", str(work / "runs"), "--name", "r", "--vis-videos", "0"]
    first = run_cmd(base)
    if first.returncode != 0:
        return Outcome("a first run", f"first run: exit {first.returncode}: {first.stderr.strip()[-100:]}", False)
    last = (work / "runs" / "r" / "last.pth").read_bytes()
    again = run_cmd(base)
    changed = run_cmd(base + ["--resume", "--lr", "0.5"])
    kept = (work / "runs" / "r" / "last.pth").read_bytes() == last
    ok = (first.returncode == 0 and again.returncode == 2 and "already holds a run" in again.stderr
          and changed.returncode == 2 and "--lr" in changed.stderr and kept)
    return Outcome("rerun and changed --resume: exit 2, files kept",
                   f"first {first.returncode}, rerun {again.returncode}, resume --lr {changed.returncode}, "
                   f"last.pth {'kept' if kept else 'changed'}", ok)


CASES: dict[str, Callable[[Path], Outcome]] = {
    "preprocess SIGKILL --workers 2": lambda w: case_killed_preprocess(w, signal.SIGKILL),
    "preprocess SIGTERM --workers 2": lambda w: case_killed_preprocess(w, signal.SIGTERM),
    "second preprocess, same --dst": case_second_run_locked,
    "half-written frame folder": case_half_written_folder,
    "zero-byte JPEG, loader workers": case_bad_jpeg_in_workers,
    "ASR after another file": case_asr_order,
    "10-min clip, no speech, ASR on": case_long_no_speech,
    "variable frame rate": case_vfr,
    "sidecar garbage, cue past end": case_sidecar,
    "short video, audio hint": case_loader_messages,
    "NaN in audio": case_nan_audio,
    "run directory reused, --resume changed": case_run_directory,
    "10-min clip, predict memory": case_predict_memory,
}


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, help="folder for the cases' files (default: a temporary folder)")
    p.add_argument("--only", help="comma list of case numbers (1-based) to run")
    p.add_argument("--skip-long", action="store_true", help="skip the 10-minute clip (about 1.5 min)")
    args = p.parse_args(argv)
    names = list(CASES)
    chosen = [names[int(i) - 1] for i in args.only.split(",")] if args.only else names
    if args.skip_long:
        chosen = [n for n in chosen if not n.startswith("10-min")]  # the two 10-minute clips
    rows = []
    with tempfile.TemporaryDirectory(prefix="faults-") as tmp:
        base = args.work or Path(tmp)
        for i, name in enumerate(chosen, 1):
            work = base / f"case{names.index(name) + 1:02d}"
            work.mkdir(parents=True, exist_ok=True)
            start = time.perf_counter()
            try:
                outcome = CASES[name](work)
            except Exception as e:  # a case that breaks is a failed case, and the table goes on
                outcome = Outcome("-", f"{type(e).__name__}: {str(e)[:100]}", False)
            rows.append((name, outcome, time.perf_counter() - start))
            print(f"[{i}/{len(chosen)}] {name}: {'PASS' if outcome.ok else 'FAIL'} ({rows[-1][2]:.0f} s)", flush=True)
    width = max(len(r[0]) for r in rows)
    print(f"\n{'case':<{width}}  result  expected | observed")
    for name, o, _ in rows:
        print(f"{name:<{width}}  {'PASS' if o.ok else 'FAIL':<6}  {o.expected} | {o.observed}")
    failed = sum(not o.ok for _, o, _ in rows)
    print(f"\n{len(rows) - failed} of {len(rows)} cases pass")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
