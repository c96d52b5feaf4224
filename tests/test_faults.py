"""Faults met by a new user (issue 12): each case here fails without its fix. tests/fault_injection.py runs
the same cases end to end through the command lines and prints a table."""
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from datasets.errors import DataError
from datasets.audio import decode_audio
from datasets.frames import count_frames
from datasets.transcripts import parse_srt
from datasets.video_emotion import VideoEmotionDataset, collate_samples
from fixtures_data import make_video_root
from fault_injection import (babble, is_alive, live_children, order_dependent_pair, preprocess_cmd,
                                   write_clip)
from tools.preprocess.asr import _sphinx_decoder, transcribe, transcribe_pocketsphinx
from tools.preprocess.cli import main as preprocess_main
from tools.preprocess.guard import output_lock
from tools.preprocess.layout import Video
from tools.preprocess.pipeline import process_video
from tools.preprocess.vad import speech_regions
from tools.preprocess.video import extract_frames

ROOT = Path(__file__).resolve().parents[1]


def first_error(dataset, workers: int) -> DataError:
    """The DataError iterating a DataLoader with `workers` processes raises (its workers shut down cleanly)."""
    batches = iter(torch.utils.data.DataLoader(dataset, batch_size=2, num_workers=workers,
                                               collate_fn=collate_samples))
    try:
        for _ in batches:
            pass
    except DataError as e:
        e.__traceback__ = None  # drops the frames holding the iterator, so `del` below stops its workers
        error = e
    else:
        pytest.fail("no DataError")
    del batches
    return error


def test_a_bad_jpeg_read_in_a_loader_worker_is_the_same_data_error(tmp_path):
    ann = make_video_root(tmp_path, train_per_class=1, test_per_class=0, n_frames=8)
    (tmp_path / "imgs" / "Anger" / "anger_0" / "000003.jpg").write_bytes(b"")  # zero bytes
    ds = VideoEmotionDataset(tmp_path, ann, "train", seq_len=2, snippet_duration=4, sample_size=16,
                             with_audio=False, val_fraction=0.0, decode_threads=1)
    alone, workers = first_error(ds, 0), first_error(ds, 2)
    assert "000003.jpg" in alone.path and "cannot decode JPEG" in alone.why
    assert (str(workers), workers.path, workers.why, workers.fix) == (str(alone), alone.path, alone.why, alone.fix)


def test_data_error_survives_pickling_and_parses_a_bare_message():
    e = DataError("/d/imgs/Joy/a: b", "n_frames says 3 (of 4)", "run preprocess again (see --force)")
    back = pickle.loads(pickle.dumps(e))
    assert (back.path, back.why, back.fix) == (e.path, e.why, e.fix)
    again = DataError(str(e))
    assert str(again) == str(e) and again.fix == e.fix


# ------------------------------------------------------------------------------------ preprocessing


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_preprocess_workers_die_with_the_killed_run_and_a_rerun_completes(tmp_path, sig):
    for k in range(4):
        write_clip(tmp_path / "src" / ("Joy" if k % 2 else "Fear") / f"v{k}.mp4", 12, size=(160, 120))
    dst = tmp_path / "data"
    run = subprocess.Popen(preprocess_cmd(tmp_path / "src", dst, "--workers", "2", "--asr", "none"), cwd=ROOT,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 30
    while len(workers := live_children(run.pid)) < 2 and time.time() < deadline and run.poll() is None:
        time.sleep(0.05)
    assert len(workers) >= 2 and run.poll() is None, "the run ended before its workers could be seen"
    time.sleep(0.3)  # the workers are decoding
    run.send_signal(sig)
    run.wait()
    deadline = time.time() + 5
    while any(is_alive(w) for w in workers) and time.time() < deadline:
        time.sleep(0.05)
    survivors = [w for w in workers if is_alive(w)]
    for w in survivors:  # do not leave orphans behind when this fails
        os.kill(w, signal.SIGKILL)
    assert not survivors, "worker processes outlived the killed run"

    again = subprocess.run(preprocess_cmd(tmp_path / "src", dst, "--workers", "2", "--asr", "none"), cwd=ROOT,
                           capture_output=True, text=True)
    assert again.returncode == 0, again.stdout + again.stderr
    for k in range(4):  # every video complete, and what the loader reads agrees with the record
        folder = dst / "imgs" / ("Joy" if k % 2 else "Fear") / f"v{k}"
        assert count_frames(folder) == int((folder / "n_frames").read_text()) == 120


def test_a_second_preprocess_run_on_one_output_folder_is_refused(tmp_path, capsys):
    write_clip(tmp_path / "src" / "Joy" / "a.mp4", 1)
    dst = tmp_path / "data"
    with output_lock(dst / ".preprocess" / "lock"):
        assert preprocess_main(preprocess_cmd(tmp_path / "src", dst, "--workers", "1", "--asr", "none")[2:]) == 2
    err = capsys.readouterr().err
    assert "another preprocess run is writing into this folder" in err and str(dst / ".preprocess" / "lock") in err
    assert "delete" in err and not (dst / "imgs").exists()
    assert preprocess_main(preprocess_cmd(tmp_path / "src", dst, "--workers", "1", "--asr", "none")[2:]) == 0  # released


# ---------------------------------------------------------------------------------- speech recognition


def test_recognition_of_a_file_does_not_depend_on_the_file_before_it():
    a, b = order_dependent_pair()
    _sphinx_decoder.cache_clear()  # a fresh process
    alone = transcribe_pocketsphinx(a)
    transcribe_pocketsphinx(b)  # a worker that recognised another video first
    assert transcribe_pocketsphinx(a) == alone and alone


@pytest.mark.parametrize("kind", ["silence", "tone", "noise", "hum", "bursts"])
def test_the_voice_activity_check_skips_audio_without_speech(kind):
    t = np.arange(16000 * 20) / 16000
    rng = np.random.default_rng(0)
    noise = rng.standard_normal(t.size)
    audio = {"silence": np.zeros_like(t), "tone": 10000 * np.sin(2 * np.pi * 440 * t), "noise": 3000 * noise,
             "hum": 3000 * np.sin(2 * np.pi * 50 * t) + 200 * noise,
             "bursts": 3000 * noise * (np.sin(2 * np.pi * 0.5 * t) > 0.3)}[kind].astype(np.int16)
    assert speech_regions(audio, 16000) == []
    start = time.perf_counter()
    assert transcribe(audio, "pocketsphinx", None) == []
    assert time.perf_counter() - start < 1.0  # 20 s of bursts took PocketSphinx alone about 10 s


def test_the_voice_activity_check_keeps_speech_like_audio():
    speech = babble(6, seed=3)
    regions = speech_regions(speech, 16000)
    assert regions and regions[0][0] < 0.4 and sum(e - s for s, e in regions) > 3.0


# -------------------------------------------------------------------------------------------- frames


def frame_numbers(folder: Path, n: int) -> list[int]:
    """The source frame each JPEG shows, from the top-half level write_clip gives frame k ((10 k) % 250)."""
    return [round(np.asarray(Image.open(folder / f"{j + 1:06d}.jpg"))[:4, :, 0].mean() / 10) % 25 for j in range(n)]


def test_variable_frame_rate_video_is_written_on_a_constant_rate_timeline(tmp_path):
    times = np.concatenate([np.arange(0, 3, 1 / 10), 3 + np.arange(0, 3, 1 / 30)])  # 10 fps, then 30 fps
    write_clip(tmp_path / "vfr.mp4", 6, frame_times=times, size=(32, 24), audio=None)
    n, fps, warnings = extract_frames(tmp_path / "vfr.mp4", tmp_path, 0, 95)
    assert (n, fps) == (180, 30.0) and "variable frame rate" in warnings[0]
    shown = [int(np.searchsorted(times, (j + 0.5) / fps, side="right")) - 1 for j in range(n)]  # on screen at j / fps
    assert frame_numbers(tmp_path, n) == [k % 25 for k in shown]
    assert max(abs(times[k] - j / fps) for j, k in enumerate(shown)) < 1 / 10  # was 1.5 s at frame 89


def test_constant_rate_video_keeps_every_frame(tmp_path):
    times = np.arange(40) / 10 + np.tile([0, 0.001], 20)  # 10 fps, with millisecond jitter
    write_clip(tmp_path / "cfr.mp4", 4, frame_times=times, size=(32, 24), audio=None)
    n, fps, warnings = extract_frames(tmp_path / "cfr.mp4", tmp_path, 0, 95)
    assert (n, fps, warnings) == (40, 10.0, [])
    assert frame_numbers(tmp_path, n) == [k % 25 for k in range(40)]


# ----------------------------------------------------------------------------------------- transcripts

SETTINGS = {"short_side": 32, "jpeg_quality": 90, "audio_format": "wav", "sample_rate": 16000, "channels": 1,
            "asr": "none", "whisper_model": None}


def test_sidecar_garbage_is_warned_and_cues_past_the_end_are_clipped(tmp_path):
    src = tmp_path / "src" / "Joy" / "a.mp4"
    write_clip(src, 1.0, fps=10)  # 10 frames: 1.0 s
    src.with_suffix(".srt").write_text("1\n00:00:00,100 --> 00:00:00,500\nhello\n\n"
                                       "2\nthis block has no timing line\n\n"
                                       "3\n00:00:00,800 --> 00:00:02,000\nrunning over\n\n"
                                       "4\n00:00:03,000 --> 00:00:04,000\nafter the end\n")
    result = process_video(Video(src, "Joy", "a"), tmp_path / "data", SETTINGS)
    assert result.status == "processed"
    assert any("1 of 4 blocks have no valid timing line" in w for w in result.warnings), result.warnings
    assert any("2 of 3 transcript cues run past the video's end (1.000 s): 1 cut at the end, 1 dropped" in w
               for w in result.warnings), result.warnings
    written = parse_srt((tmp_path / "data" / "srt" / "Joy" / "a.srt").read_text()).cues
    assert [(c.start, c.end, c.text) for c in written] == [(0.1, 0.5, "hello"), (0.8, 1.0, "running over")]


# --------------------------------------------------------------------------------------- loader messages


def test_a_video_shorter_than_one_snippet_is_counted_in_the_report(tmp_path):
    ann = make_video_root(tmp_path, train_per_class=1, test_per_class=0, n_frames=3, audio=False, srt=False)
    ds = VideoEmotionDataset(tmp_path, ann, "train", seq_len=2, snippet_duration=4, sample_size=16,
                             with_audio=False, val_fraction=0.0)
    assert sorted(ds.short) == ["anger_0", "joy_0"]
    assert "2 shorter than one snippet (4 frames), their frames looped" in ds.report()


def test_fix_hints_name_the_command_line_flags_and_both_audio_names(tmp_path):
    ann = make_video_root(tmp_path, train_per_class=1, test_per_class=0, n_frames=8, audio=True, srt=False)
    (tmp_path / "mp3" / "Joy" / "joy_0.wav").unlink()
    with pytest.raises(DataError) as e:
        VideoEmotionDataset(tmp_path, ann, "train", val_fraction=0.0)
    assert "--missing-audio zeros" in e.value.fix and "joy_0.mp3|.wav" in e.value.why
    (tmp_path / "imgs" / "Anger" / "anger_0" / "000001.jpg").rename(tmp_path / "elsewhere.jpg")
    with pytest.raises(DataError) as e:
        VideoEmotionDataset(tmp_path, ann, "train", val_fraction=0.0, with_audio=False)
    assert "--on-missing-video skip" in e.value.fix


def test_nan_in_the_audio_names_the_file(tmp_path):
    wave = np.sin(np.arange(16000) / 10).astype(np.float32)
    wave[100:110] = np.nan
    path = tmp_path / "nan.wav"
    with av.open(str(path), "w") as c:  # 32-bit float PCM keeps the NaN
        stream = c.add_stream("pcm_f32le", rate=16000, layout="mono")
        frame = av.AudioFrame.from_ndarray(wave[None], format="flt", layout="mono")
        frame.sample_rate = 16000
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            c.mux(packet)
    with pytest.raises(DataError) as e:
        decode_audio(path)
    assert e.value.path == str(path) and "NaN or infinite" in e.value.why
