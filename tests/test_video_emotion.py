import shutil

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from datasets.errors import DataError
from datasets.video_emotion import VideoEmotionDataset, collate_samples
from fixtures_data import make_video_root, tone, write_audio, write_frames, write_srt
from tools import bench_loader

T, L, S = 3, 4, 16
SMALL = dict(seq_len=T, snippet_duration=L, sample_size=S, decode_threads=2)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("ve")
    ann = make_video_root(root, n_frames=24, seconds=2.0)
    return root, ann


def test_sample_dict_contract(root):
    r, ann = root
    ds = VideoEmotionDataset(r, ann, "test", with_text=True, **SMALL)
    assert len(ds) == 2 and ds.labels == ["Anger", "Joy"] and ds.targets == [0, 1]
    s = ds[1]
    expected = {"video": (torch.uint8, (T, 3, L, S, S)), "audio": (torch.float32, (T, 100, 128)),
                "label": (torch.int64, ()), "index": (torch.int64, ()), "frame_indices": (torch.int64, (T, L)),
                "seg_bounds": (torch.int64, (T, 2)), "seg_times": (torch.float32, (T, 2)),
                "aug": (torch.float32, (8,)), "n_frames": (torch.int64, ()), "fps": (torch.float32, ())}
    assert set(s) == set(expected) | {"video_id", "texts"}
    for key, (dtype, shape) in expected.items():
        assert s[key].dtype == dtype and tuple(s[key].shape) == shape, key
    assert s["video_id"] == "joy_4" and int(s["label"]) == 1 and int(s["index"]) == 1
    assert float(s["fps"]) == pytest.approx(12.0)  # 24 frames / 2 s of audio, no fps file
    assert torch.allclose(s["seg_times"], s["seg_bounds"].float() / 12.0)
    assert s["texts"] == ["joy words", "joy words", ""]  # the cue [0, 1) s; segments [0, .67), [.67, 1.33), [1.33, 2)
    assert torch.isfinite(s["audio"]).all()
    batch = collate_samples([ds[0], s])
    assert batch["video"].shape == (2, T, 3, L, S, S) and batch["label"].tolist() == [0, 1]
    assert batch["video_id"] == ["anger_4", "joy_4"] and len(batch["texts"]) == 2 and len(batch["texts"][1]) == T


def test_texts_follow_segments(root):
    r, ann = root
    ds = VideoEmotionDataset(r, ann, "test", with_text=True, with_audio=False, seq_len=6, snippet_duration=4,
                             sample_size=8)
    s = ds[0]
    assert float(s["fps"]) == pytest.approx(12.0)  # from the audio's metadata when audio is not read
    assert s["seg_times"][:, 1].tolist() == pytest.approx([1 / 3, 2 / 3, 1.0, 4 / 3, 5 / 3, 2.0])
    assert s["texts"] == ["anger words"] * 3 + [""] * 3
    assert "audio" not in s
    assert VideoEmotionDataset(r, ann, "test", **SMALL)[0]["texts"] == [""] * T  # with_text=False


def test_subsets_partition_training(root):
    r, ann = root
    train = VideoEmotionDataset(r, ann, "train", val_fraction=0.25, **SMALL)
    val = VideoEmotionDataset(r, ann, "val", val_fraction=0.25, **SMALL)
    test = VideoEmotionDataset(r, ann, "test", **SMALL)
    assert len(val) == 2 and len(train) == 6 and sorted(val.targets) == [0, 1]
    assert not set(train.video_ids) & set(val.video_ids)
    assert not (set(train.video_ids) | set(val.video_ids)) & set(test.video_ids)
    assert train.training_aug and not val.training_aug and not test.training_aug
    assert len(VideoEmotionDataset(r, ann, "train", val_fraction=0.0, **SMALL)) == 8
    with pytest.raises(DataError, match="no validation subset: --val-fraction is 0"):
        VideoEmotionDataset(r, ann, "val", val_fraction=0.0, **SMALL)


def test_eval_deterministic_train_reproducible(root):
    r, ann = root
    ev = VideoEmotionDataset(r, ann, "test", **SMALL)
    a, b = ev[0], ev[0]
    assert (a["video"] == b["video"]).all() and torch.equal(a["audio"], b["audio"])
    tr = VideoEmotionDataset(r, ann, "train", training_aug=True, spec_augment=True, **SMALL)
    torch.manual_seed(0)
    x = [tr[i] for i in range(4)]
    torch.manual_seed(0)
    y = [tr[i] for i in range(4)]
    for p, q in zip(x, y):
        assert torch.equal(p["video"], q["video"]) and torch.equal(p["audio"], q["audio"])
        assert torch.equal(p["aug"], q["aug"]) and torch.equal(p["frame_indices"], q["frame_indices"])
    draws = [tr[0] for _ in range(12)]
    assert len({tuple(d["frame_indices"].flatten().tolist()) for d in draws}) > 1
    assert len({tuple(d["aug"].tolist()) for d in draws}) > 1


def test_read_frames_reproduces_sample(root):
    r, ann = root
    tr = VideoEmotionDataset(r, ann, "train", training_aug=True, val_fraction=0.0, **SMALL)
    torch.manual_seed(1)
    for i in range(3):
        s = tr[i]
        assert torch.equal(tr.read_frames(i, s["frame_indices"], s["aug"]), s["video"])


def test_one_spatial_draw_per_video(tmp_path):
    ann = make_video_root(tmp_path, classes=("Joy",), train_per_class=1, test_per_class=1, audio=False, srt=False)
    d = tmp_path / "imgs" / "Joy" / "joy_0"
    for i in range(2, 25):
        shutil.copy(d / "000001.jpg", d / f"{i:06d}.jpg")
    tr = VideoEmotionDataset(tmp_path, ann, "train", with_audio=False, training_aug=True, val_fraction=0.0, **SMALL)
    torch.manual_seed(0)
    for _ in range(8):
        v = tr[0]["video"]
        assert (v == v[:1, :, :1]).all()


def test_short_video_loop_padded(tmp_path):
    ann = make_video_root(tmp_path, classes=("Joy",), train_per_class=1, test_per_class=1, n_frames=5, seconds=0.5)
    ds = VideoEmotionDataset(tmp_path, ann, "test", **SMALL)  # T * L = 12 > 5 frames
    s = ds[0]
    assert s["frame_indices"].flatten().tolist() == [p % 5 for p in range(12)]
    assert s["seg_bounds"][-1, 1] == 12 and ds.videos[0]["n_frames"] == 5
    assert torch.equal(ds[0]["video"], s["video"]) and torch.isfinite(s["audio"]).all()


def test_audio_windows_follow_segments(tmp_path):
    ann = make_video_root(tmp_path, classes=("Joy",), train_per_class=0, test_per_class=1, n_frames=48, seconds=4.0)
    wave = np.concatenate([np.zeros(32000, np.float32), tone(2.0)])  # sound only in the second half
    write_audio(tmp_path / "mp3" / "Joy" / "joy_0.wav", wave)
    ds = VideoEmotionDataset(tmp_path, ann, "test", seq_len=4, snippet_duration=4, sample_size=8)
    s = ds[0]
    assert s["seg_times"].tolist() == [[0, 1], [1, 2], [2, 3], [3, 4]]
    loud = s["audio"].mean(dim=(1, 2))
    assert loud[2] > loud[0] + 0.2 and loud[3] > loud[1] + 0.2


def test_missing_frame_folders(root, tmp_path):
    r, ann = root
    for cls, vid in (("Anger", "anger_4"), ("Joy", "joy_4")):
        shutil.copytree(r / "imgs" / cls / vid, tmp_path / "imgs" / cls / vid)
        shutil.copytree(r / "mp3" / cls, tmp_path / "mp3" / cls, dirs_exist_ok=True)
    with pytest.raises(DataError, match=r"8 of 8 annotated videos have no usable frame folder: .*anger_0 "
                                         r"\(frame folder not found\).* and 3 more.*--on-missing-video skip"):
        VideoEmotionDataset(tmp_path, ann, "train", val_fraction=0.0, **SMALL)
    shutil.rmtree(tmp_path / "imgs" / "Joy" / "joy_4")
    ds = VideoEmotionDataset(tmp_path, ann, "test", on_missing="skip", **SMALL)
    assert ds.video_ids == ["anger_4"] and ds.skipped == [("joy_4", "frame folder not found")]
    assert "1 skipped without frames (e.g. joy_4)" in ds.report()


def test_missing_and_bad_audio_policies(tmp_path):
    ann = make_video_root(tmp_path, classes=("Anger", "Joy"), train_per_class=0, test_per_class=3)
    (tmp_path / "mp3" / "Anger" / "anger_0.wav").unlink()
    (tmp_path / "mp3" / "Anger" / "anger_1.wav").write_bytes(b"corrupt" * 50)
    write_audio(tmp_path / "mp3" / "Anger" / "anger_2.wav", np.zeros(16000, np.float32))
    with pytest.raises(DataError, match=r"1 of 6 annotated videos have no audio.*anger_0.mp3.*--missing-audio zeros"):
        VideoEmotionDataset(tmp_path, ann, "test", **SMALL)
    ds = VideoEmotionDataset(tmp_path, ann, "test", missing_audio="zeros", **SMALL)
    assert ds.report() == ""
    s = ds[0]
    assert torch.isfinite(s["audio"]).all() and s["audio"].std() < 1e-5  # silence
    assert float(s["fps"]) == 30.0  # no fps file, no audio: default_fps
    assert torch.isfinite(ds[1]["audio"]).all() and torch.isfinite(ds[2]["audio"]).all()
    assert ds.issues() == {"audio_missing": ["anger_0"], "audio_unreadable": ["anger_1"], "audio_silent": ["anger_2"],
                           "transcript_garbage": [], "transcript_unusable": []}
    assert "audio_unreadable: 1 (e.g. anger_1)" in ds.report()
    (tmp_path / "mp3" / "Anger" / "anger_0.wav").write_bytes(b"corrupt" * 50)
    strict = VideoEmotionDataset(tmp_path, ann, "test", **SMALL)
    with pytest.raises(DataError, match=r"anger_1.wav: cannot decode audio"):
        strict[1]
    assert torch.isfinite(strict[2]["audio"]).all()  # silent audio is valid under 'error'


def test_issues_counted_across_workers(tmp_path):
    ann = make_video_root(tmp_path, classes=("Joy",), train_per_class=0, test_per_class=4)
    (tmp_path / "srt" / "Joy" / "joy_1.srt").write_text("only garbage here\n")
    write_srt(tmp_path / "srt" / "Joy" / "joy_2.srt", [(0.0, 1.0, "fine")])
    with open(tmp_path / "srt" / "Joy" / "joy_2.srt", "a") as f:
        f.write("\nnot a cue\n")
    ds = VideoEmotionDataset(tmp_path, ann, "test", with_text=True, **SMALL)
    loader = DataLoader(ds, batch_size=2, num_workers=2, collate_fn=collate_samples)
    texts = [t for b in loader for t in b["texts"]]  # read in two worker processes
    assert texts[1] == [""] * T and texts[2][0] == "fine"
    assert ds.issues()["transcript_garbage"] == ["joy_1", "joy_2"] and ds.issues()["transcript_unusable"] == ["joy_1"]


def test_workers_reproducible(root):
    r, ann = root
    tr = VideoEmotionDataset(r, ann, "train", val_fraction=0.0, **SMALL)

    def run():
        torch.manual_seed(7)
        loader = DataLoader(tr, batch_size=4, shuffle=True, num_workers=2, collate_fn=collate_samples)
        return [(b["video_id"], b["video"], b["audio"]) for b in loader]

    first, second = run(), run()
    for (ids_a, v_a, a_a), (ids_b, v_b, a_b) in zip(first, second):
        assert ids_a == ids_b and torch.equal(v_a, v_b) and torch.equal(a_a, a_b)


def test_bench_loader_smoke(root, capsys):
    r, ann = root
    rows = bench_loader.main(["--root", str(r), "--annotation", str(ann), "--workers", "0", "--seq-len", "2",
                              "--snippet", "2", "--size", "8", "--batches", "1", "--batch-size", "2"])
    assert len(rows) == 1 and rows[0]["workers"] == 0 and rows[0]["clips_per_s"] > 0
    assert "clips/s" in capsys.readouterr().out


def test_fps_file_wins(tmp_path):
    ann = make_video_root(tmp_path, classes=("Joy",), train_per_class=0, test_per_class=1, n_frames=24)
    write_frames(tmp_path / "imgs" / "Joy" / "joy_0", 24, fps=24.0)
    s = VideoEmotionDataset(tmp_path, ann, "test", **SMALL)[0]
    assert float(s["fps"]) == 24.0 and s["seg_times"][-1, 1] == pytest.approx(1.0)


def test_decoding_pool_is_kept_per_process_and_not_pickled(root):
    import pickle
    ds = VideoEmotionDataset(root[0], root[1], "test", **SMALL)
    s = ds[0]
    first = ds._decode_pool()
    assert first is ds._decode_pool()  # reused, not one pool per read
    again = ds.read_frames(0, s["frame_indices"], s["aug"])
    assert torch.equal(again, s["video"])
    clone = pickle.loads(pickle.dumps(ds))  # what DataLoader workers receive
    assert "_pool" not in clone.__dict__ and torch.equal(clone.read_frames(0, s["frame_indices"], s["aug"]), again)
