"""tools/make_demo.py: deterministic real video files whose class cue is strong only inside the key span."""
import json
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest

from tools.make_demo import (CLASSES, COLOURS, KEY_FRACTION, SAMPLE_RATE, lexicon_words, make_demo, plan_clips,
                             render_audio, render_frames)
from tools.preprocess.annotations import read_class_ind, read_split_list
from tools.preprocess.cli import main as preprocess
from tools.preprocess.subtitles import read_sidecar

ROOT = Path(__file__).resolve().parents[1]
DURATION, FPS = 2.0, 6


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    make_demo(out, seed=0, per_class=2, duration=DURATION, fps=FPS)
    return out


def all_files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_same_seed_gives_identical_files_other_seed_differs(demo, tmp_path):
    again = tmp_path / "again"
    make_demo(again, seed=0, per_class=2, duration=DURATION, fps=FPS, workers=2)
    assert all_files(again) == all_files(demo)
    other = plan_clips(1, 2, DURATION, FPS)
    assert [c.key for c in other] != [c.key for c in plan_clips(0, 2, DURATION, FPS)]


def test_layout_key_spans_and_split_lists(demo):
    videos = sorted((demo / "videos").rglob("*.mp4"))
    assert len(videos) == 16 and {v.parent.name for v in videos} == set(CLASSES)
    assert all(v.with_suffix(".srt").is_file() for v in videos)
    spans = json.loads((demo / "key_spans.json").read_text())
    assert sorted(spans) == sorted(v.stem for v in videos)
    for (start, end), in spans.values():
        assert 0 <= start < end <= DURATION
        assert KEY_FRACTION[0] * DURATION - 1 / FPS <= end - start <= KEY_FRACTION[1] * DURATION + 1 / FPS
        assert abs(start * FPS - round(start * FPS)) < 1e-6  # on frame boundaries
    labels = read_class_ind(demo / "classInd.txt")
    assert labels == list(CLASSES)
    train = read_split_list(demo / "trainlist01.txt", labels)
    test = read_split_list(demo / "testlist01.txt", labels)
    assert "/" in (demo / "testlist01.txt").read_text().split()[0] and " " not in (demo / "testlist01.txt").read_text().splitlines()[0]
    assert sorted(v for _, v in train + test) == sorted(spans)
    for c in CLASSES:  # 2 per class: one each side
        assert sum(label == c for label, _ in train) == 1 and sum(label == c for label, _ in test) == 1


def test_clip_is_h264_with_aac_audio(demo):
    with av.open(str(demo / "videos" / "Joy" / "demo008.mp4")) as c:
        v, a = c.streams.video[0], c.streams.audio[0]
        assert v.codec_context.name in ("h264", "mpeg4") and a.codec_context.name == "aac"
        assert (v.width, v.height, float(v.average_rate), a.sample_rate) == (128, 96, FPS, SAMPLE_RATE)
        assert sum(1 for _ in c.decode(video=0)) == DURATION * FPS


def test_cues_are_strong_only_inside_the_key_span():
    for clip in plan_clips(3, 1, 3.0, 12):
        frames = np.stack(list(render_frames(clip, 3.0, 12))).astype(np.float32)  # (N, H, W, 3)
        inside = (np.arange(len(frames)) / 12 >= clip.key[0]) & (np.arange(len(frames)) / 12 < clip.key[1])
        near = (np.abs(frames - np.array(COLOURS[clip.label])).max(axis=-1) < 40).mean(axis=(1, 2))
        assert near[inside].mean() > 4 * near[~inside].mean() + 0.003, CLASSES[clip.label]
        audio = render_audio(clip, 3.0)
        t = np.arange(audio.size) / SAMPLE_RATE
        key = (t >= clip.key[0] + 0.02) & (t < clip.key[1] - 0.02)
        assert np.sqrt((audio[key] ** 2).mean()) > 2.5 * np.sqrt((audio[~key] ** 2).mean())


def test_transcript_names_the_class_only_in_the_key_span(demo):
    words, neutral = lexicon_words()
    assert all(len(words[c]) >= 50 for c in range(len(CLASSES))) and len(neutral) >= 50
    spans = json.loads((demo / "key_spans.json").read_text())
    for label, c in enumerate(CLASSES):
        for srt in (demo / "videos" / c).glob("*.srt"):
            (start, end), = spans[srt.stem]
            for cue in read_sidecar(srt):
                n = sum(w in words[label] for w in cue.text.split())
                assert n == (3 if (cue.start, cue.end) == (round(start, 3), round(end, 3)) else 0), srt


def test_demo_goes_through_preprocess(demo, tmp_path):
    dst = tmp_path / "data"
    assert preprocess(["--src", str(demo / "videos"), "--dst", str(dst), "--split-lists", str(demo),
                       "--short-side", "112", "--workers", "1", "--asr", "none"]) == 0
    db = json.loads((dst / "ve8.json").read_text())
    assert db["labels"] == list(CLASSES) and len(db["database"]) == 16
    frames = dst / "imgs" / "Joy" / "demo008"
    assert (frames / "n_frames").read_text() == str(int(DURATION * FPS)) and (frames / "fps").read_text() == "6.0"
    assert len(list((dst / "srt").rglob("*.srt"))) == 16 and len(list((dst / "mp3").rglob("*.wav"))) == 16


def test_cli_help():
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "make_demo.py"), "--help"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "--per-class" in proc.stdout and "key_spans.json" in proc.stdout
