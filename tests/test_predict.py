"""tools/predict.py: one demo .mp4 decoded in memory gives the loader's inputs and main.py's prediction; every
bad-input case is a clear error (exit 2, the file named, no traceback)."""
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import opts
from core import checkpoint as ckpt
from core import methods
from core.run import main as run_main
from datasets.sample import SampleSpec
from datasets.video_emotion import VideoEmotionDataset
from fixtures_data import tone, write_audio, write_srt, write_video_only
from tools import predict
from tools.make_demo import make_demo
from tools.preprocess.cli import main as preprocess

DURATION, FPS, SHORT_SIDE = 2.0, 6, 128
TINY = ["--seq-len", "2", "--snippet-duration", "2", "--sample-size", "16", "--batch-size", "4", "--workers", "0",
        "--val-fraction", "0", "--select", "last", "--no-progress", "--epochs", "1"]


def build_demo_run(tmp: Path, vis_videos: int = 0) -> dict:
    """The demo set (2 clips per class, 2 s at 6 fps), preprocessed, and a CTEN trained one epoch on it."""
    demo, data = tmp / "demo", tmp / "demo" / "data"
    make_demo(demo, seed=0, per_class=2, duration=DURATION, fps=FPS)
    assert preprocess(["--src", str(demo / "videos"), "--dst", str(data), "--split-lists", str(demo),
                       "--short-side", str(SHORT_SIDE), "--asr", "none", "--workers", "1"]) == 0
    assert run_main(["--preset", "cten_demo", "--root", str(data), "--annotation", str(data / "ve8.json"),
                      "--output", str(tmp / "runs"), "--name", "tiny", "--vis-videos", str(vis_videos), *TINY]) == 0
    run = tmp / "runs" / "tiny"
    test_ids = [p["video_id"] for p in json.loads((run / "predictions.json").read_text())]
    videos = {p.stem: p for p in (demo / "videos").rglob("*.mp4")}
    return {"demo": demo, "data": data, "run": run, "test_ids": test_ids, "videos": videos}


_BUILT: dict = {}


def demo_run_once(tmp_path_factory) -> dict:
    """build_demo_run once per session: tests/test_visualize.py draws from the same run."""
    if not _BUILT:
        before = torch.get_num_threads()
        torch.set_num_threads(1)  # 2 shared cores: more intra-op threads only contend
        try:
            _BUILT.update(build_demo_run(tmp_path_factory.mktemp("demo_run")))
        finally:
            torch.set_num_threads(before)
    return _BUILT


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """2 shared cores: more intra-op threads only contend."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    return demo_run_once(tmp_path_factory)


def run_predict(*argv) -> int:
    return predict.main([str(a) for a in argv])


def test_in_memory_inputs_match_the_loader_on_preprocessed_frames(demo_run):
    ds = VideoEmotionDataset(demo_run["data"], demo_run["data"] / "ve8.json", "test", seq_len=4, snippet_duration=4,
                             sample_size=32)  # 4 x 4 > 12 frames: loop-padded
    vid = ds.video_ids[0]
    ref = ds[0]
    spec = SampleSpec(seq_len=4, snippet_duration=4, sample_size=32)
    got = predict.load_video_inputs(demo_run["videos"][vid], spec, short_side=SHORT_SIDE)
    assert got["video_id"] == vid and got["video"].shape == ref["video"].shape == (4, 3, 4, 32, 32)
    assert got["video"].dtype == torch.uint8
    for key in ("frame_indices", "seg_bounds", "n_frames", "fps", "aug"):
        assert torch.equal(got[key], ref[key]), key
    assert torch.allclose(got["seg_times"], ref["seg_times"])
    assert torch.allclose(got["audio"], ref["audio"], atol=1e-5)  # the same 16 kHz mono samples
    diff = (got["video"].float() - ref["video"].float()).abs().mean()
    other = (got["video"].float() - ds[1]["video"].float()).abs().mean()  # another clip, for scale
    assert diff < 2.0 and other > 5 * diff, (diff, other)  # JPEG loss only
    assert got["sources"] == {"audio": "stream", "transcript": None} and got["texts"] == [""] * 4


def test_draft_scale_is_what_pil_applies_to_a_jpeg(tmp_path):
    for (w, h), size in [((171, 128), 16), ((171, 128), 64), ((171, 128), 112), ((320, 240), 112), ((40, 300), 9)]:
        path = tmp_path / f"{w}x{h}.jpg"
        Image.new("RGB", (w, h), (90, 20, 200)).save(path)
        with Image.open(path) as im:
            im.draft("RGB", (size, size))
            s = predict.draft_scale(w, h, size)
            assert im.size == (math.ceil(w / s), math.ceil(h / s)), (w, h, size)


def test_predict_end_to_end_agrees_with_main(demo_run, tmp_path, capsys):
    vid = demo_run["test_ids"][0]
    out = tmp_path / "out"
    assert run_predict(demo_run["videos"][vid], "--checkpoint", demo_run["run"] / "best.pth", "--out", out,
                       "--device", "cpu") == 0
    printed = capsys.readouterr().out
    record = json.loads((out / f"{vid}.json").read_text())
    assert "top emotions:" in printed and record["top"][0]["label"] in printed
    probs = np.array(list(record["probs"].values()))
    assert abs(probs.sum() - 1) < 1e-4 and list(record["probs"]) == record["labels"]
    assert [t["label"] for t in record["top"]] == [record["labels"][i] for i in np.argsort(-probs)[:3]]
    assert record["pred"] == record["top"][0]["label"] and record["short_side"] == SHORT_SIDE
    assert record["n_frames"] == DURATION * FPS and record["duration"] == pytest.approx(DURATION)
    assert len(record["seg_times"]) == 2 and set(record["curves"]) == {"att_v", "att_a"}
    assert record["segments"]
    for seg in record["segments"]:
        assert 0 <= seg["start"] < seg["end"] <= record["duration"] + 1e-6 and 0 < seg["score"] <= 1
    with Image.open(out / f"{vid}.png") as png:
        assert png.width > 300 and png.height > 200
    ref = next(p for p in json.loads((demo_run["run"] / "predictions.json").read_text()) if p["video_id"] == vid)
    assert np.allclose(probs, ref["probs"], atol=0.02)  # main.py's test evaluation of the same clip
    assert np.allclose(record["curves"]["att_a"], ref["att_a"], atol=1e-3)  # identical audio


def test_detection_options_and_last_checkpoint(demo_run, tmp_path, capsys):
    vid = demo_run["test_ids"][1]
    assert run_predict(demo_run["videos"][vid], "--checkpoint", demo_run["run"] / "last.pth", "--out", tmp_path,
                       "--det-method", "threshold", "--det-threshold", "1.5", "--top", "1") == 0  # last.pth: class names
    # from the annotation
    record = json.loads((tmp_path / f"{vid}.json").read_text())
    assert record["segments"] == [] and record["detection_rule"]["threshold"] == 1.5
    assert len(record["top"]) == 1 and "none" in capsys.readouterr().out
    assert record["detection_rule"]["combine"] == "min"  # the run's setting where no flag is given


def test_short_mute_video_gets_silence_and_segments_in_its_own_time(demo_run, tmp_path, capsys):
    clip = write_video_only(tmp_path / "mute.avi", n=3, size=24)  # 3 frames at 10 fps < T x L = 4: loop-padded
    assert run_predict(clip, "--checkpoint", demo_run["run"] / "best.pth", "--out", tmp_path,
                       "--det-method", "threshold", "--det-threshold", "0") == 0  # every segment is emotional
    record = json.loads((tmp_path / "mute.json").read_text())
    assert record["sources"]["audio"] == "silence" and "silence" in record["warnings"][0]
    assert "warning:" in capsys.readouterr().err and record["n_frames"] == 3
    assert record["seg_times"][-1][1] == pytest.approx(0.4) and record["duration"] == pytest.approx(0.3)
    assert [(s["start"], s["end"]) for s in record["sampled_segments"]] == [(0.0, pytest.approx(0.4))]
    assert [(s["start"], s["end"]) for s in record["segments"]] == [(0.0, pytest.approx(0.3))]


def test_fold_segments_into_the_clip():
    fold = predict.fold_segments
    assert fold([(0.5, 1.5, 0.9)], 2.0) == [(0.5, 1.5, 0.9)]  # not padded: unchanged
    assert fold([(2.5, 3.0, 0.4)], 2.0) == [(0.5, 1.0, 0.4)]  # the replay shows 0.5-1.0 s again
    assert fold([(1.5, 2.5, 0.7)], 2.0) == [(0.0, 0.5, 0.7), (1.5, 2.0, 0.7)]  # wraps
    assert fold([(0.2, 0.6, 0.3), (2.4, 3.0, 0.8)], 2.0) == [(0.2, 1.0, 0.8)]  # overlapping: merged, best score
    assert fold([(1.0, 3.5, 0.6)], 2.0) == [(0.0, 2.0, 0.6)]  # longer than the clip
    assert fold([(1.0, 2.0, 0.5), (2.0, 2.5, 0.2)], 2.0) == [(0.0, 0.5, 0.2), (1.0, 2.0, 0.5)]
    assert fold([], 2.0) == []


def bad_checkpoints(tmp: Path, good: dict) -> dict:
    paths = {"missing": tmp / "absent.pth", "garbage": tmp / "garbage.pth", "not_main": tmp / "tensor.pth",
             "wrong_keys": tmp / "wrong.pth", "mart_stage1": tmp / "stage1.pth"}
    paths["garbage"].write_bytes(b"not a torch file")
    torch.save(torch.zeros(3), paths["not_main"])
    torch.save({"model": {"nope": torch.zeros(1)}, "config": good["config"], "labels": good["labels"]},
               paths["wrong_keys"])
    torch.save({"model": {"mbt.cls": torch.zeros(1)}, "config": {**good["config"], "method": "mart"},
                "labels": good["labels"]}, paths["mart_stage1"])
    return paths


@pytest.mark.parametrize("case, message", [
    ("missing", "does not exist"), ("garbage", "corrupt"), ("not_main", "not a best.pth"),
    ("wrong_keys", "nope"), ("mart_stage1", "stage2/best.pth")])
def test_bad_checkpoint_is_a_clear_error(demo_run, tmp_path, capsys, case, message):
    good = torch.load(demo_run["run"] / "best.pth", weights_only=False)
    path = bad_checkpoints(tmp_path, good)[case]
    vid = demo_run["test_ids"][0]
    assert run_predict(demo_run["videos"][vid], "--checkpoint", path, "--out", tmp_path) == 2
    err = capsys.readouterr().err
    assert message in err and str(path) in err and "Traceback" not in err


def bad_videos(tmp: Path) -> dict:
    rng = np.random.default_rng(0)
    (tmp / "corrupt.mp4").write_bytes(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    return {"missing": (tmp / "absent.mp4", "not found"),
            "corrupt": (tmp / "corrupt.mp4", "cannot read"),
            "audio_only": (write_audio(tmp / "speech.wav", tone(0.5)), "no video stream")}


def test_a_video_shorter_than_one_snippet_is_looped_as_in_training(demo_run, tmp_path, capsys):
    clip = write_video_only(tmp_path / "short.avi", n=1)
    assert run_predict(clip, "--checkpoint", demo_run["run"] / "best.pth", "--out", tmp_path) == 0
    record = json.loads((tmp_path / "short.json").read_text())
    assert record["n_frames"] == 1 and any("shorter than one snippet" in w for w in record["warnings"])
    assert "shorter than one snippet" in capsys.readouterr().err


@pytest.mark.parametrize("case", ["missing", "corrupt", "audio_only"])
def test_bad_video_is_a_clear_error(demo_run, tmp_path, capsys, case):
    path, message = bad_videos(tmp_path)[case]
    assert run_predict(path, "--checkpoint", demo_run["run"] / "best.pth", "--out", tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert message in err and str(path) in err and "fix:" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_mart_checkpoint_predicts_with_the_mbt_and_reads_the_transcript(demo_run, tmp_path):
    args = opts.parse_args(["--preset", "mart_demo", "--root", str(demo_run["data"]), "--mbt-depth", "2",
                            "--fusion-layer", "1", "--mbt-width", "32", "--mbt-heads", "2", *TINY])
    labels = json.loads((demo_run["data"] / "ve8.json").read_text())["labels"]
    recipe = methods.get(args.method)
    model = recipe.build_model(recipe.arch_of(args), len(labels))
    # a checkpoint as main.py wrote them before 'method' and 'arch' were stored: restored from its config
    ckpt.save_checkpoint(tmp_path / "best.pth", model=model.state_dict(), config=vars(args), labels=labels, epoch=0)
    vid = demo_run["test_ids"][0]
    srt = write_srt(tmp_path / "words.srt", [(1.2, 1.8, "a happy ending")])
    assert run_predict(demo_run["videos"][vid], "--checkpoint", tmp_path / "best.pth", "--out", tmp_path,
                       "--srt", srt) == 0
    record = json.loads((tmp_path / f"{vid}.json").read_text())
    assert record["method"] == "mart" and set(record["curves"]) == {"degree_v", "degree_a"}
    assert record["sources"] == {"audio": "stream", "transcript": "srt"}
    assert record["texts"] == ["", "a happy ending"]  # segments [0, 1) and [1, 2) s
    assert abs(sum(record["probs"].values()) - 1) < 1e-4


def test_transcript_comes_from_srt_then_sidecar_then_speech_recognition(demo_run, tmp_path):
    clip = demo_run["videos"][demo_run["test_ids"][0]]  # make_demo writes a sidecar clip.srt
    srt = write_srt(tmp_path / "given.srt", [(0.0, 1.0, "given words")])
    assert [c.text for c in predict.find_cues(clip, srt)[0]] == ["given words"]
    cues, source = predict.find_cues(clip)
    assert source == "sidecar" and cues and cues[0].text == clip.with_suffix(".srt").read_text().split("\n")[2]
    bare = Path(shutil.copy(clip, tmp_path / "bare.mp4"))
    assert predict.find_cues(bare) == ([], None)
    cues, source = predict.find_cues(bare, asr="pocketsphinx", wave=predict.decode_wave(bare))
    assert source == "pocketsphinx" and all(c.end <= DURATION + 0.1 for c in cues)


def test_same_named_videos_never_overwrite_each_other(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    a, b = tmp_path / "a" / "clip.mp4", tmp_path / "b" / "clip.mp4"
    for video in (a, b):
        video.parent.mkdir()
        video.write_bytes(b"x")
    first = predict.output_path(out, a)
    assert first == out / "clip.json"
    first.write_text(json.dumps({"source": str(a.resolve())}))
    assert predict.output_path(out, a) == first  # the same input is rewritten in place
    second = predict.output_path(out, b)
    assert second == out / "clip_2.json"
    second.write_text(json.dumps({"source": str(b.resolve())}))
    assert predict.output_path(out, b) == second and predict.output_path(out, a) == first


def test_run_folder_label_key_spans_and_a_japanese_name(demo_run, tmp_path, capsys, monkeypatch):
    """--checkpoint takes the run folder and the output goes beside it; --label and --gt-spans are recorded and drawn;
    the plot shows the segments the console lists; a Japanese file name draws without missing-glyph warnings."""
    import warnings
    vid = demo_run["test_ids"][0]
    clip = tmp_path / "喜びの動画 1.mp4"
    shutil.copy(demo_run["videos"][vid], clip)
    spans = json.loads((demo_run["demo"] / "key_spans.json").read_text())[vid]
    (tmp_path / "spans.json").write_text(json.dumps({clip.stem: spans}))
    drawn = {}
    real = predict.timeline_figure

    def spy(*args, **kwargs):
        drawn.update(detected=list(args[3]), gt=list(args[4]), true=args[6])
        return real(*args, **kwargs)

    monkeypatch.setattr(predict, "timeline_figure", spy)
    label = next(p["label"] for p in json.loads((demo_run["run"] / "predictions.json").read_text())
                 if p["video_id"] == vid)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert run_predict(clip, "--checkpoint", demo_run["run"], "--label", label, "--gt-spans",
                           tmp_path / "spans.json") == 0
    assert not [w for w in caught if "Glyph" in str(w.message)]
    out = demo_run["run"] / "predictions"
    record = json.loads((out / f"{clip.stem}.json").read_text())
    assert (out / f"{clip.stem}.png").is_file() and record["checkpoint"] == str(demo_run["run"] / "best.pth")
    assert record["label"] == label and record["gt_spans"] == spans
    assert drawn["detected"] == [(s["start"], s["end"], s["score"]) for s in record["segments"]]
    assert drawn["gt"] == spans and drawn["true"] == label
    printed = capsys.readouterr().out
    assert f"(true: {label})" in printed and "key spans given:" in printed
    # spans as START-END pairs; a label the checkpoint does not know; a folder without a checkpoint
    assert run_predict(clip, "--checkpoint", demo_run["run"], "--out", tmp_path, "--gt-spans", "0.5-1", "1.2-1.8") == 0
    assert json.loads((tmp_path / f"{clip.stem}.json").read_text())["gt_spans"] == [[0.5, 1.0], [1.2, 1.8]]
    assert run_predict(clip, "--checkpoint", demo_run["run"], "--out", tmp_path, "--label", "Calm") == 2
    assert "--label 'Calm' is not a class" in capsys.readouterr().err
    (tmp_path / "empty_run").mkdir()
    assert run_predict(clip, "--checkpoint", tmp_path / "empty_run", "--out", tmp_path) == 2
    err = capsys.readouterr().err
    assert "holds no best.pth or last.pth" in err and "--resume" not in err
