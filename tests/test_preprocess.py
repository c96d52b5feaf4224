"""tools/preprocess: tiny real videos written with PyAV, end to end, resume, and every bad-input case."""
import json
import struct
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import av
import numpy as np
import pytest
from PIL import Image

from datasets.errors import DataError
from datasets.transcripts import Cue, parse_srt
from tools.preprocess.annotations import annotation_json, read_split_list, split_from_lists, stratified_split
from tools.preprocess.asr import check_engine, transcribe_pocketsphinx
from tools.preprocess.cli import main
from tools.preprocess.layout import Video, video_paths
from tools.preprocess.pipeline import process_video
from tools.preprocess.subtitles import format_srt, read_sidecar
from tools.preprocess.video import decode_stream, resized_size

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {"short_side": 32, "jpeg_quality": 90, "audio_format": "wav", "sample_rate": 16000, "channels": 1,
            "asr": "none", "whisper_model": None}


def write_video(path: Path, n_frames: int = 6, fps: int = 10, size=(64, 48), audio_s: float | None = 0.6,
                video: bool = True) -> None:
    """A tiny mp4/mkv: frame i is a flat grey of level 20 * i; audio a 440 Hz tone."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as c:  # every stream is added before the first packet is muxed
        vs = c.add_stream("mpeg4", rate=fps) if video else None
        aus = c.add_stream("aac", rate=16000, layout="mono") if audio_s is not None else None
        if vs is not None:
            vs.width, vs.height, vs.pix_fmt = size[0], size[1], "yuv420p"
            for i in range(n_frames):
                frame = av.VideoFrame.from_ndarray(np.full((size[1], size[0], 3), 20 * i, np.uint8), format="rgb24")
                frame.pts = i
                c.mux(vs.encode(frame))
            c.mux(vs.encode(None))
        if aus is not None:
            t = np.arange(int(16000 * audio_s)) / 16000
            frame = av.AudioFrame.from_ndarray((0.3 * np.sin(2 * np.pi * 440 * t))[None].astype(np.float32),
                                               format="flt", layout="mono")
            frame.sample_rate, frame.pts = 16000, 0
            c.mux(aus.encode(frame))
            c.mux(aus.encode(None))


def embed_subtitles(video: Path, srt_text: str, out: Path) -> None:
    """Remux `video` with `srt_text` as a SubRip stream into the Matroska file `out`."""
    srt = video.with_suffix(".srt")
    srt.write_text(srt_text)
    out.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(video)) as vin, av.open(str(srt)) as sin, av.open(str(out), "w", format="matroska") as c:
        pairs = [(vin, vin.streams.video[0], c.add_stream_from_template(vin.streams.video[0])),
                 (sin, sin.streams.subtitles[0], c.add_stream_from_template(sin.streams.subtitles[0]))]
        for container, src, dst in pairs:
            for packet in container.demux(src):
                if packet.dts is not None:
                    packet.stream = dst
                    c.mux(packet)
    srt.unlink()


def write_lists(folder: Path, classes, train, test) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "classInd.txt").write_text("\n".join(f"{i} {c}" for i, c in enumerate(classes, 1)))
    (folder / "trainlist01.txt").write_text("".join(f"{c}/{v} {classes.index(c) + 1}\n" for c, v in train))
    (folder / "testlist01.txt").write_text("".join(f"{c}/{v}\n" for c, v in test))
    return folder


def run(src: Path, dst: Path, *extra: str) -> int:
    return main(["--src", str(src), "--dst", str(dst), "--workers", "1", "--asr", "none", "--short-side", "32",
                 *extra])


def decoded_samples(path: Path) -> tuple[int, int, int]:
    """(samples per channel, sample rate, channels) of an audio file."""
    with av.open(str(path)) as c:
        frames = list(c.decode(audio=0))
    return sum(f.samples for f in frames), frames[0].sample_rate, len(frames[0].layout.channels)


@pytest.fixture
def small_set(tmp_path):
    """Joy/a.mp4 with a sidecar .srt, Fear/b.mkv with an embedded subtitle stream, and split lists."""
    src = tmp_path / "src"
    write_video(src / "Joy" / "a.mp4", n_frames=7)
    (src / "Joy" / "a.srt").write_text("1\r\n00:00:00,100 --> 00:00:00,400\r\n<i>happy</i> day\r\n")
    write_video(tmp_path / "plain.mp4", n_frames=5)
    embed_subtitles(tmp_path / "plain.mp4", "1\n00:00:00,200 --> 00:00:00,450\nscary night\n\n", src / "Fear" / "b.mkv")
    lists = write_lists(tmp_path / "lists", ["Fear", "Joy"], [("Joy", "a")], [("Fear", "b")])
    return src, lists


def test_end_to_end_layout_and_json(small_set, tmp_path, capsys):
    src, lists = small_set
    dst = tmp_path / "data"
    assert run(src, dst, "--split-lists", str(lists)) == 0
    for label, vid, n in (("Joy", "a", 7), ("Fear", "b", 5)):
        frames = dst / "imgs" / label / vid
        assert (frames / "n_frames").read_text() == str(n)
        assert float((frames / "fps").read_text()) == 10.0
        assert sorted(p.name for p in frames.glob("*.jpg")) == [f"{i:06d}.jpg" for i in range(1, n + 1)]
        assert Image.open(frames / "000001.jpg").size == (43, 32)  # 64x48, short side 32
    n, rate, channels = decoded_samples(dst / "mp3" / "Joy" / "a.wav")
    assert (rate, channels) == (16000, 1) and abs(n - 9600) < 1100
    assert parse_srt((dst / "srt" / "Joy" / "a.srt").read_text()).cues == [Cue(0.1, 0.4, "happy day")]
    assert parse_srt((dst / "srt" / "Fear" / "b.srt").read_text()).cues == [Cue(0.2, 0.45, "scary night")]
    assert not (dst / "mp3" / "Fear" / "b.wav").exists()  # the mkv was written without audio
    assert json.loads((dst / "ve8.json").read_text()) == {
        "labels": ["Fear", "Joy"],
        "database": {"a": {"subset": "training", "annotations": {"label": "Joy"}},
                     "b": {"subset": "validation", "annotations": {"label": "Fear"}}}}
    out = capsys.readouterr().out
    assert "2 processed" in out and "no audio stream" in out and "b.mkv" in out


def test_folder_cli_with_process_pool(small_set, tmp_path):
    """`python tools/preprocess` runs as a folder (imports resolve) and with a process pool."""
    src, _ = small_set
    dst = tmp_path / "data"
    cmd = [sys.executable, str(ROOT / "tools" / "preprocess"), "--src", str(src), "--dst", str(dst),
           "--workers", "2", "--asr", "none", "--ratio", "1:1", "--audio-format", "mp3", "--json", "x.json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert decoded_samples(dst / "mp3" / "Joy" / "a.mp3")[1] == 16000
    db = json.loads((dst / "x.json").read_text())["database"]
    assert {v: e["annotations"]["label"] for v, e in db.items()} == {"a": "Joy", "b": "Fear"}
    assert subprocess.run([sys.executable, str(ROOT / "tools" / "preprocess"), "--help"],
                          capture_output=True, timeout=60).returncode == 0


def test_resume_skips_finished_and_redoes_partial(small_set, tmp_path, capsys):
    src, lists = small_set
    dst = tmp_path / "data"
    assert run(src, dst) == 0
    first = (dst / "imgs" / "Joy" / "a" / "000001.jpg").stat().st_mtime_ns
    capsys.readouterr()
    assert run(src, dst) == 0
    assert "0 processed, 2 skipped" in capsys.readouterr().out
    assert (dst / "imgs" / "Joy" / "a" / "000001.jpg").stat().st_mtime_ns == first

    (dst / "imgs" / "Fear" / "b" / "000003.jpg").unlink()  # a damaged finished video is redone
    (dst / "mp3" / "Joy" / "a.wav").write_bytes(b"RIFF")  # so is one whose audio no longer decodes
    assert run(src, dst) == 0
    assert "2 processed, 0 skipped" in capsys.readouterr().out
    assert (dst / "imgs" / "Fear" / "b" / "000003.jpg").is_file()
    assert decoded_samples(dst / "mp3" / "Joy" / "a.wav")[0] > 0

    video = Video(src / "Joy" / "a.mp4", "Joy", "a")  # an interrupted run: no record, leftovers in tmp
    paths = video_paths(dst.resolve(), "Joy", "a")
    paths.record.unlink()
    paths.tmp.mkdir(parents=True)
    (paths.tmp / "junk").write_text("x")
    assert process_video(video, dst.resolve(), SETTINGS).status == "processed"
    assert not paths.tmp.exists()
    assert process_video(video, dst.resolve(), {**SETTINGS, "short_side": 24}).status == "processed"
    assert Image.open(dst / "imgs" / "Joy" / "a" / "000001.jpg").size[1] == 24


@pytest.mark.parametrize("case, message", [
    ("empty", "empty file (0 bytes)"),
    ("corrupt", "FFmpeg cannot read it"),
    ("audio_only", "no video stream"),
    ("bad_sidecar", "not a SubRip file"),
])
def test_bad_input_fails_with_the_file_named(tmp_path, capsys, case, message):
    src, dst = tmp_path / "src", tmp_path / "data"
    write_video(src / "Joy" / "good.mp4")
    bad = src / "Anger" / "bad.mp4"
    bad.parent.mkdir(parents=True)
    if case == "empty":
        bad.write_bytes(b"")
    elif case == "corrupt":
        bad.write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    elif case == "audio_only":
        write_video(bad, video=False)
    else:
        write_video(bad)
        (src / "Anger" / "bad.srt").write_text("this is not\na subtitle file\n")
    assert run(src, dst, "--ratio", "1:1") == 1
    out = capsys.readouterr().out
    assert "1 failed" in out and message in out and "fix:" in out
    assert str(bad.with_suffix(".srt") if case == "bad_sidecar" else bad) in out
    assert not (dst / "imgs" / "Anger" / "bad").exists()
    assert list(json.loads((dst / "ve8.json").read_text())["database"]) == ["good"]
    assert run(src, dst, "--ratio", "1:1", "--keep-going") == 0


def test_video_without_audio_keeps_frames_and_warns(tmp_path, capsys):
    src, dst = tmp_path / "src", tmp_path / "data"
    write_video(src / "Sadness" / "mute.mp4", n_frames=4, audio_s=None)
    assert run(src, dst, "--ratio", "2:1") == 0
    assert (dst / "imgs" / "Sadness" / "mute" / "n_frames").read_text() == "4"
    assert not list(dst.rglob("mute.wav"))
    out = capsys.readouterr().out
    assert "WARNINGS" in out and "mute.mp4: no audio stream" in out
    assert run(src, dst, "--ratio", "2:1") == 0  # and it counts as finished
    assert "1 skipped" in capsys.readouterr().out


def test_split_list_problems_become_notes(tmp_path, capsys):
    src, dst = tmp_path / "src", tmp_path / "data"
    write_video(src / "Joy" / "a.mp4")
    write_video(src / "Joy" / "extra.mp4")
    write_video(src / "Fear" / "moved.mp4")
    lists = write_lists(tmp_path / "lists", ["Fear", "Joy"], [("Joy", "a"), ("Joy", "moved")], [("Fear", "gone")])
    assert run(src, dst, "--split-lists", str(lists)) == 0
    out = capsys.readouterr().out
    assert "Joy/moved is listed as Joy but found under Fear/" in out
    assert "Fear/gone is listed but has no source video" in out
    assert "extra.mp4 is not in the split lists" in out
    assert list(json.loads((dst / "ve8.json").read_text())["database"]) == ["a"]


def test_dataset_level_errors_exit_2_before_any_work(tmp_path, capsys):
    write_video(tmp_path / "src" / "Joy" / "a.mp4")
    lists = write_lists(tmp_path / "lists", ["Joy"], [], [])
    (lists / "trainlist01.txt").write_text("Joy/a 1\nAnger/b 2\n")
    assert run(tmp_path / "src", tmp_path / "data", "--split-lists", str(lists)) == 2
    assert "trainlist01.txt:2: unknown class 'Anger'" in capsys.readouterr().err
    assert run(tmp_path / "nowhere", tmp_path / "data") == 2
    assert "source folder not found" in capsys.readouterr().err
    write_video(tmp_path / "src" / "Fear" / "a.mp4")
    assert run(tmp_path / "src", tmp_path / "data", "--ratio", "2:1") == 2
    assert "video id 'a' is also under Fear/" in capsys.readouterr().err
    assert not (tmp_path / "data" / "imgs").exists()


def test_official_split_lists_reproduce_the_official_json(official_dir):
    """With --duplicate-ids keep-last the released JSONs come out exactly; by default VE-8's one id listed under two
    classes stops the run, naming it."""
    for name in ("ve8", "ek6"):
        folder = official_dir / name
        labels, entries, notes = split_from_lists(folder, "01", "keep-last")
        official = json.loads((folder / f"{name}_01.json").read_text())
        assert annotation_json(labels, entries) == official
        assert list(annotation_json(labels, entries)["database"]) == list(official["database"])
    assert any("3527012618_7ceb8fb27b_700 is listed 2 times" in n for n in split_from_lists(
        official_dir / "ve8", "01", "keep-last")[2])
    with pytest.raises(DataError, match="3527012618_7ceb8fb27b_700 .Disgust in trainlist01.txt, Fear in trainlist01"):
        split_from_lists(official_dir / "ve8", "01")
    assert split_from_lists(official_dir / "ek6", "01")[2] == []


def test_split_list_index_must_match_class(tmp_path):
    path = tmp_path / "trainlist01.txt"
    path.write_text("Joy/a 1\n")
    with pytest.raises(DataError, match="class index 1 does not match 'Joy'"):
        read_split_list(path, ["Anger", "Joy"])


def test_stratified_split_is_2_to_1_per_class_and_seeded():
    videos = {f"{c}{i}": c for c in "ABC" for i in range(9)}
    split = stratified_split(videos, (2, 1), seed=0)
    for c in "ABC":
        assert sum(split[v] == "validation" for v in videos if videos[v] == c) == 3
    assert split == stratified_split(videos, (2, 1), seed=0)
    assert split != stratified_split(videos, (2, 1), seed=1)
    assert set(stratified_split({"x": "A", "y": "A"}, (2, 1), 0).values()) == {"training", "validation"}


def test_sidecar_reads_leniently_and_format_srt_round_trips(tmp_path):
    sidecar = tmp_path / "a.srt"
    sidecar.write_bytes("00:00:01.5 --> 00:00:02,250\r\n{\\an8}Hello  <b>there</b>\r\nfriend\r\n\r\n"
                        "just words\r\n\r\n2\r\n00:01:00,000 --> 00:01:01,000\r\nbyé\r\n".encode("cp1252"))
    cues = read_sidecar(sidecar)
    assert cues == [Cue(1.5, 2.25, "Hello there friend"), Cue(60.0, 61.0, "byé")]
    assert parse_srt(format_srt(cues)).cues == cues
    sidecar.write_text("")
    assert read_sidecar(sidecar) == []


def ffmpeg_error():
    raise av.error.InvalidDataError(1094995529, "Invalid data found")


def fake_container(frames: list, cut_short: bool) -> SimpleNamespace:
    """demux yields one packet per item (its decode gives [item], or raises for None), then ends or raises."""
    def demux(stream):
        for frame in frames:
            yield SimpleNamespace(decode=ffmpeg_error if frame is None else lambda frame=frame: [frame])
        if cut_short:
            ffmpeg_error()
    return SimpleNamespace(demux=demux)


def test_decode_stream_skips_bad_packets_and_names_the_file_when_nothing_decodes():
    stream, path, got = SimpleNamespace(type="audio"), Path("x.mp4"), []
    assert decode_stream(fake_container(["f1", None, "f2"], False), stream, path, got.append) == (2, 1, "")
    n, bad, cut_short = decode_stream(fake_container(["f3", None], True), stream, path, got.append)
    assert got == ["f1", "f2", "f3"] and (n, bad) == (1, 1) and "Invalid data found" in cut_short
    with pytest.raises(DataError, match=r"x.mp4: cannot demux the audio stream .*Invalid data.*re-encode"):
        decode_stream(fake_container([None], True), stream, path, got.append)


def test_resized_size_keeps_aspect_and_short_side():
    assert resized_size(640, 480, 240) == (320, 240)
    assert resized_size(480, 640, 240) == (240, 320)
    assert resized_size(64, 48, 0) == (64, 48)


def test_display_matrix_rotation_is_applied(tmp_path):
    """A phone video stored landscape with a 90-degree display matrix comes out portrait, marker turned."""
    path = tmp_path / "src" / "Joy" / "r.mp4"
    path.parent.mkdir(parents=True)
    with av.open(str(path), "w") as c:
        vs = c.add_stream("mpeg4", rate=10)
        vs.width, vs.height, vs.pix_fmt = 64, 32, "yuv420p"
        img = np.zeros((32, 64, 3), np.uint8)
        img[:8, :8] = 255  # top-left marker
        frame = av.VideoFrame.from_ndarray(img, format="rgb24")
        frame.pts = 0
        c.mux(vs.encode(frame))
        c.mux(vs.encode(None))
    data = bytearray(path.read_bytes())
    at = data.find(b"tkhd") + 4 + 40  # version 0 track header: the matrix follows 40 bytes of fields
    data[at:at + 36] = struct.pack(">9i", 0, 65536, 0, -65536, 0, 0, 0, 0, 1 << 30)  # rotate 90 clockwise
    path.write_bytes(data)
    assert run(tmp_path / "src", tmp_path / "data", "--short-side", "0") == 0
    out = np.asarray(Image.open(tmp_path / "data" / "imgs" / "Joy" / "r" / "000001.jpg"))
    assert out.shape[:2] == (64, 32)
    assert out[:8, -8:].mean() > 200 and out[:8, :8].mean() < 60  # now top-right


def test_pocketsphinx_runs_offline_and_whisper_needs_a_local_model(tmp_path):
    check_engine("pocketsphinx", None)
    t = np.arange(32000) / 16000
    voiced = sum(np.sin(2 * np.pi * 120 * k * t) / k for k in range(1, 20)) * (np.sin(2 * np.pi * 3 * t) > 0)
    cues = transcribe_pocketsphinx((voiced * 8000 * (t > 0.3)).astype(np.int16))
    assert all(0 <= c.start < c.end <= 2.0 + 1e-6 and c.text for c in cues)
    with pytest.raises(ValueError, match="needs --whisper-model"):
        check_engine("whisper", None)
    with pytest.raises(ValueError, match="config.json not found"):
        check_engine("whisper", tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(ValueError, match="not 'whisper'"):
        check_engine("whisper", tmp_path)


def test_no_speech_is_counted_apart_and_a_new_asr_keeps_finished_videos(tmp_path, capsys):
    """Issue 19: clips without speech were counted 'with warnings', and changing --asr redid every video silently."""
    src = tmp_path / "src"
    for name in ("a", "b"):
        write_video(src / "Joy" / f"{name}.mp4", n_frames=4, audio_s=0.5)
    (src / "Joy" / "b.srt").write_text("1\n00:00:00,000 --> 00:00:00,300\nhello\n")
    dst = tmp_path / "data"
    assert run(src, dst, "--asr", "pocketsphinx") == 0
    out = capsys.readouterr().out
    assert "0 with warnings; 1 without speech (no transcript)" in out
    assert "WARNINGS (1)" in out and "a.mp4: the voice-activity check found no speech" in out  # the note: no JSON
    report = json.loads((dst / ".preprocess" / "report.json").read_text())
    assert [bool(v["no_speech"]) for v in report["videos"]] == [True, False]
    first = (dst / "imgs" / "Joy" / "a" / "000001.jpg").stat().st_mtime_ns
    assert run(src, dst, "--asr", "none") == 0  # only the transcript setting changed: kept, and said
    out = capsys.readouterr().out
    assert "0 processed, 2 skipped" in out
    assert "2 finished videos kept although made with other transcript settings" in out
    assert "asr pocketsphinx -> none" in out and "--force" in out
    assert (dst / "imgs" / "Joy" / "a" / "000001.jpg").stat().st_mtime_ns == first
    assert run(src, dst, "--asr", "none", "--short-side", "24") == 0  # an output setting changed: redone, and said
    out = capsys.readouterr().out
    assert "2 processed" in out and "2 finished videos redone" in out and "short_side 32 -> 24" in out
