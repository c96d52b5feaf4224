"""The feature cache: tools/extract_features.py writes it, datasets/feature_cache.py reads it."""
import json
import os

import numpy as np
import pytest
import torch

from datasets.errors import DataError
from datasets.feature_cache import (FeatureCache, cache_expectation, gather_grid, grid_lookup, grid_starts,
                                    nearest_grid, pad_grids, parse_crops, crop_aug)
from datasets.frames import tsn_sample
from datasets.video_emotion import VideoEmotionDataset
from fixtures_data import write_frames
from models.pretrained import load_resnet3d
from datasets.frames import erased_view_frames
from models.resnet3d import ResNet3D
from tools.extract_features import main as extract_main

L, S = 4, 16
VIEWS = "centre,top-left+flip,bottom-right"
FRAMES = {"Anger": {"a_long": 21}, "Joy": {"j_short": 3, "j_mid": 9}}  # j_short < L: every snippet wraps


def make_root(root, frames=FRAMES):
    database = {}
    for cls, videos in frames.items():
        for k, (vid, n) in enumerate(videos.items()):
            write_frames(root / "imgs" / cls / vid, n, width=24, height=18)
            database[vid] = {"subset": "training" if k == 0 else "validation", "annotations": {"label": cls}}
    ann = root / "ann.json"
    ann.write_text(json.dumps({"labels": list(frames), "database": database}))
    return ann


def extract_args(root, ann, out, stride, *extra):
    return ["--root", str(root), "--annotation", str(ann), "--out", str(out), "--visual-depth", "10",
            "--visual-input", "kinetics400", "--snippet-duration", str(L), "--sample-size", str(S),
            "--stride", str(stride), "--crops", VIEWS, "--chunk", "5", "--workers", "0", "--no-progress", *extra]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    torch.set_num_threads(1)
    base = tmp_path_factory.mktemp("cache")
    ann = make_root(base / "root")
    assert extract_main(extract_args(base / "root", ann, base / "stride1", 1)) == 0
    return base, ann


def test_grid_and_nearest():
    g = grid_starts(30, 8, 8)
    assert g.tolist() == [0, 8, 16, 22, 24]  # 22 = n - L: the last snippet that does not wrap
    assert grid_starts(3, 4, 2).tolist() == [0, 2]  # shorter than L: all snippets wrap
    starts = torch.tensor([0, 3, 4, 5, 21, 23, 29])
    assert nearest_grid(starts, g).tolist() == [0, 0, 0, 1, 3, 3, 4]  # tie at 4 and 23 -> the earlier start
    # around the loop 29 is 1 frame from 0
    assert nearest_grid(starts, g, n_frames=30).tolist() == [0, 0, 0, 1, 3, 3, 0]
    # a snippet that needs no wrap-around never maps to one that does
    for n in range(8, 60):
        gs = grid_starts(n, 8, 8)
        idx = nearest_grid(torch.arange(n - 8 + 1), gs, n)
        assert int(gs[idx].max()) <= n - 8


def test_pad_grids_and_batched_gather():
    grids = [grid_starts(n, 4, 3) for n in (10, 25, 4)]
    feats = [torch.randn(len(g), 5) for g in grids]
    starts = torch.tensor([[0, 9, 5], [24, 11, 2], [3, 0, 1]])
    n = torch.tensor([10, 25, 4])
    batched = gather_grid(pad_grids(feats), pad_grids(grids), starts, n)  # (3, 3, 5)
    for b in range(3):
        torch.testing.assert_close(batched[b], gather_grid(feats[b], grids[b], starts[b], int(n[b])))


def test_views():
    assert parse_crops("all")[0] == "centre" and len(parse_crops("all")) == 10
    assert crop_aug("top-right+flip").tolist() == [2, 1, 0, 1, 0, 0, 0, 0]
    with pytest.raises(ValueError, match="unknown view 'middle'"):
        parse_crops("centre,middle")


def backbone_from_cache(path):
    model = ResNet3D(10, "kinetics400", frozen=True)
    load_resnet3d(path / "backbone_random_init.pth", model)  # the file a run passes as --visual-weights
    return model


def test_cached_features_equal_backbone_on_dataset_snippets(cache_dir):
    base, ann = cache_dir
    cache = FeatureCache(base / "stride1", expect=cache_expectation(
        ann, 10, "kinetics400", L, S, visual_weights=base / "stride1" / "backbone_random_init.pth"))
    model = backbone_from_cache(base / "stride1")
    ds = VideoEmotionDataset(base / "root", ann, "test", seq_len=3, snippet_duration=L, sample_size=S,
                             with_audio=False, val_fraction=0.0, decode_threads=1)
    for i in range(len(ds)):  # evaluation samples: centre view, loop-padded (j_short has 3 frames, T * L = 12)
        s = ds[i]
        with torch.no_grad():
            want = model(s["video"])  # (T, D)
        got = cache.lookup(s["video_id"], cache.crop_for_aug(s["aug"]), s["frame_indices"][:, 0], int(s["n_frames"]))
        torch.testing.assert_close(got, want, rtol=2e-3, atol=2e-3)
    # other views, on an erased view's re-sampled frames (kept segments contiguous and >= T * L frames long, so
    # each re-sampled snippet is L consecutive frames)
    ds = VideoEmotionDataset(base / "root", ann, "train", seq_len=3, snippet_duration=L, sample_size=S,
                             with_audio=False, val_fraction=0.0, decode_threads=1)
    _, bounds = tsn_sample(torch.arange(21), 3, L, training=False)
    view_fi = erased_view_frames(bounds, torch.tensor([False, True, True]), 21, 3, L, training=True,
                            generator=torch.Generator().manual_seed(0))
    assert (view_fi[:, 0] >= 7).all()
    for name in ("top-left+flip", "bottom-right"):
        with torch.no_grad():
            want = model(ds.read_frames(ds.video_ids.index("a_long"), view_fi, crop_aug(name)))
        got = cache.lookup("a_long", cache.crop_index(name), view_fi[:, 0])
        torch.testing.assert_close(got, want, rtol=2e-3, atol=2e-3)
    feats, starts = cache.grid("a_long", 0)
    assert feats.shape == (len(grid_starts(21, L, 1)), 512) and starts.tolist() == list(range(21))


def test_erased_views_from_the_cache_cover_the_kept_segments():
    n, T, stride = 64, 4, 4
    grid = grid_starts(n, L, stride)
    _, bounds = tsn_sample(torch.arange(n), T, L, training=False)  # segments of 16 frames
    gen = torch.Generator().manual_seed(0)
    for keep in ([False, True, False, True], [True, False, False, False], [False] * 4):
        keep = torch.tensor(keep)
        kept = torch.cat([torch.arange(int(a), int(b)) for (a, b), k in zip(bounds.tolist(), keep | ~keep.any())
                          if k]) % n
        reachable = set(nearest_grid(kept, grid, n).tolist())  # grid snippets nearest to a kept frame
        chosen = set()
        for _ in range(50):
            fi = erased_view_frames(bounds, keep, n, T, L, training=True, generator=gen)
            idx = nearest_grid(fi[:, 0], grid, n)
            d = (grid[idx] - fi[:, 0]).abs()
            assert int(torch.minimum(d, n - d).max()) <= stride // 2
            chosen |= set(idx.tolist())
        assert chosen <= reachable
        # every kept segment's grid snippets are drawn (snippet starts span each part but its last L - 1 frames)
        kept_starts = torch.cat([torch.arange(int(a), int(b) - L + 1)
                                 for (a, b), k in zip(bounds.tolist(), keep | ~keep.any()) if k])
        starts_reachable = set(nearest_grid(kept_starts, grid, n).tolist())
        assert starts_reachable <= chosen
    # batched: the views of a batch looked up in padded grids equal the per-video lookups
    feats = torch.randn(len(grid), 7)
    keep = torch.tensor([[True, False, False, True], [False, True, True, False]])
    fi = torch.stack([erased_view_frames(bounds, k, n, T, L, training=False) for k in keep])
    got = gather_grid(pad_grids([feats, feats]), pad_grids([grid, grid]), fi[..., 0], torch.tensor([n, n]))
    torch.testing.assert_close(got[1], feats[nearest_grid(fi[1, :, 0], grid, n)])
    # CTENMethod's per-video grid_lookup over a collated batch whose second video has a shorter grid
    short = grid_starts(40, L, stride)
    batch = {"grid_feats": pad_grids([feats, feats[:len(short)]]), "grid_starts": pad_grids([grid, short]),
             "n_frames": torch.tensor([n, 40])}
    view = erased_view_frames(torch.tensor([[0, 10], [10, 20], [20, 30], [30, 40]]), keep[1], 40, T, L, training=True,
                         generator=gen)
    torch.testing.assert_close(grid_lookup(batch, 1, view), feats[nearest_grid(view[:, 0], short, 40)])


@pytest.mark.parametrize("field,value", [("depth", 18), ("input_preset", "kinetics_moments"), ("snippet_duration", 16),
                                         ("sample_size", 112), ("backbone_sha256", "random-init")])
def test_stale_manifest_refused(cache_dir, field, value):
    base, ann = cache_dir
    weights = base / "stride1" / "backbone_random_init.pth"
    expect = cache_expectation(ann, 10, "kinetics400", L, S, visual_weights=weights)
    FeatureCache(base / "stride1", expect=expect)  # the matching expectation opens
    have = json.loads((base / "stride1" / "manifest.json").read_text())[field]
    with pytest.raises(DataError, match=rf"stale feature cache: {field} is {have!r} in the cache but this run "
                                        rf"expects {value!r}.*extract_features\.py"):
        FeatureCache(base / "stride1", expect=dict(expect, **{field: value}))


def test_cache_refuses_other_videos_and_changed_frames(cache_dir, tmp_path):
    base, ann = cache_dir
    data = json.loads(ann.read_text())
    data["database"]["new_video"] = {"subset": "training", "annotations": {"label": "Joy"}}
    data["database"]["j_mid"]["annotations"]["label"] = "Anger"
    other = tmp_path / "other.json"
    other.write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"1 of the run's videos are not in the cache \(e.g. new_video\)"
                                        r".*j_mid: cache 'Joy', run 'Anger'"):
        FeatureCache(base / "stride1", expect={"videos": cache_expectation(other, 10, "kinetics400", L, S)["videos"]})
    cache = FeatureCache(base / "stride1")
    with pytest.raises(DataError, match="video 'nope' is not in the feature cache"):
        cache.lookup("nope", 0, torch.tensor([0]))
    with pytest.raises(DataError, match="'j_mid' had 9 frames when cached, 10 now"):
        cache.lookup("j_mid", 0, torch.tensor([0]), n_frames=10)
    manifest = json.loads((base / "stride1" / "manifest.json").read_text())
    (tmp_path / "incomplete").mkdir()
    (tmp_path / "incomplete" / "manifest.json").write_text(json.dumps(dict(manifest, complete=False)))
    with pytest.raises(DataError, match="did not finish.*resumes"):
        FeatureCache(tmp_path / "incomplete")
    with pytest.raises(DataError, match="no feature cache manifest"):
        FeatureCache(tmp_path / "absent")


def test_nan_in_cached_features_names_the_file(cache_dir, tmp_path):
    import shutil

    base, _ = cache_dir
    copy = tmp_path / "nan_cache"
    shutil.copytree(base / "stride1", copy)
    cache = FeatureCache(copy)
    file = copy / cache._entry("a_long")["file"]
    arr = np.load(file)
    arr[1, 3, 0] = np.nan  # crop 1, grid snippet 3
    np.save(file, arr)
    cache = FeatureCache(copy)
    torch.testing.assert_close(cache.lookup("a_long", 0, torch.tensor([3])),
                               FeatureCache(base / "stride1").lookup("a_long", 0, torch.tensor([3])))  # other crop
    with pytest.raises(DataError, match="1 NaN or infinite") as e:
        cache.lookup("a_long", 1, torch.tensor([3]))
    assert e.value.path == str(file)
    with pytest.raises(DataError, match="NaN or infinite"):
        cache.grid("a_long", 1)


def test_cache_is_picklable_for_workers(cache_dir):
    import pickle

    base, _ = cache_dir
    cache = FeatureCache(base / "stride1")
    cache.lookup("a_long", 0, torch.tensor([0]))
    clone = pickle.loads(pickle.dumps(cache))
    assert clone._maps == {}
    starts = torch.tensor([5, 6])
    torch.testing.assert_close(clone.lookup("a_long", 2, starts), cache.lookup("a_long", 2, starts))


def test_resume_skips_finished_videos(tmp_path, capsys):
    torch.set_num_threads(1)
    ann = make_root(tmp_path / "root")
    out = tmp_path / "cache"
    args = extract_args(tmp_path / "root", ann, out, 3)
    args[args.index("--workers") + 1] = "1"  # the DataLoader worker path once
    assert extract_main(args) == 0
    files = {p.name: p for p in (out / "feats").glob("*.npy")}
    assert sorted(files) == ["a_long.npy", "j_mid.npy", "j_short.npy"]
    first = np.load(files["a_long.npy"])
    assert first.shape == (3, len(grid_starts(21, L, 3)), 512) and first.dtype == np.float16
    mtimes = {k: p.stat().st_mtime_ns for k, p in files.items()}
    files["j_mid.npy"].unlink()
    files["j_short.npy"].write_bytes(files["j_short.npy"].read_bytes()[:100])  # a truncated file is redone
    capsys.readouterr()
    assert extract_main(args) == 0
    assert "2 videos extracted, 1 already cached" in capsys.readouterr().out
    assert files["a_long.npy"].stat().st_mtime_ns == mtimes["a_long.npy"]
    np.testing.assert_array_equal(np.load(files["j_short.npy"]).shape, (3, 1, 512))
    # other settings are refused in the same folder; --overwrite starts afresh
    assert extract_main(extract_args(tmp_path / "root", ann, out, 2)) == 2
    assert "stride: 3 in the cache, 2 now" in capsys.readouterr().err
    assert extract_main(extract_args(tmp_path / "root", ann, out, 2, "--overwrite")) == 0
    assert "3 videos extracted, 0 already cached" in capsys.readouterr().out
    assert FeatureCache(out).stride == 2


def test_missing_frame_folder(tmp_path, capsys):
    ann = make_root(tmp_path / "root", {"Anger": {"a_long": 6}, "Joy": {"j_mid": 5}})
    os.rename(tmp_path / "root" / "imgs" / "Joy" / "j_mid", tmp_path / "moved")
    args = extract_args(tmp_path / "root", ann, tmp_path / "cache", 4)
    assert extract_main(args) == 2
    assert "1 annotated videos have no usable frame folder" in capsys.readouterr().err
    assert extract_main(args + ["--on-missing-video", "skip"]) == 0
    cache = FeatureCache(tmp_path / "cache")
    assert list(cache.videos) == ["a_long"] and "j_mid" in cache.manifest["skipped"]
