from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from PIL import Image

from datasets.errors import DataError
from datasets.frames import (CROPS, IDENTITY_AUG, apply_spatial_aug, count_frames, decode_frame, draw_spatial_aug,
                             read_fps, read_frames, tsn_sample)
from fixtures_data import write_frames


def test_count_frames(tmp_path):
    d = write_frames(tmp_path / "v", 7)
    assert count_frames(d) == 7
    (d / "n_frames").write_text("5\n")  # stale (fewer than the folder holds): the JPEGs are counted
    assert count_frames(d) == 7
    (d / "n_frames").write_text("9\n")  # more than the folder holds: half-written
    with pytest.raises(DataError, match="n_frames says 9 but only 000001.jpg..000007.jpg"):
        count_frames(d)
    (d / "n_frames").unlink()
    assert count_frames(d) == 7
    (d / "000004.jpg").unlink()
    with pytest.raises(DataError, match="not 000001.jpg..000006.jpg"):
        count_frames(d)
    (d / "000001.jpg").rename(d / "000004.jpg")  # the first frames missing, the last there (a killed writer)
    with pytest.raises(DataError, match="numbered 000002.jpg..000007.jpg"):
        count_frames(d)
    with pytest.raises(DataError, match=r"empty.*no frames"):
        count_frames(write_frames(tmp_path / "empty", 0))
    with pytest.raises(DataError, match=r"absent: frame folder not found.*tools/preprocess"):
        count_frames(tmp_path / "absent")


def test_read_fps(tmp_path):
    d = write_frames(tmp_path / "v", 2)
    assert read_fps(d, 60, audio_seconds=2.0) == 30.0
    assert read_fps(d, 60, audio_seconds=None, default_fps=25) == 25.0
    (d / "fps").write_text("12.5\n")
    assert read_fps(d, 60, audio_seconds=2.0) == 12.5
    (d / "fps").write_text("fast")
    with pytest.raises(DataError, match=r"fps: fps file does not hold a positive number"):
        read_fps(d, 60)


def test_tsn_eval_centred():
    idx, bounds = tsn_sample(torch.arange(100), seq_len=4, snippet_duration=4, training=False)
    assert bounds.tolist() == [[0, 25], [25, 50], [50, 75], [75, 100]]
    assert idx[:, 0].tolist() == [10, 35, 60, 85]  # (25 - 4) // 2 = 10 into each segment
    assert (idx[:, 1:] - idx[:, :-1] == 1).all()
    assert idx.dtype == torch.long and bounds.dtype == torch.long


def test_tsn_train_random_within_segment():
    g = torch.Generator().manual_seed(0)
    starts = []
    for _ in range(300):
        idx, bounds = tsn_sample(torch.arange(100), 4, 4, training=True, generator=g)
        assert ((idx >= bounds[:, :1]) & (idx < bounds[:, 1:])).all()
        assert (idx[:, 1:] - idx[:, :-1] == 1).all()
        starts.append(idx[:, 0] - bounds[:, 0])
    starts = torch.stack(starts)
    assert starts.min() == 0 and starts.max() == 21  # every offset 0..25-4 reachable
    assert len(set(starts[:, 0].tolist())) > 10


def test_tsn_loop_padding_does_not_mutate():
    frames = [0, 1, 2, 3, 4]
    idx, bounds = tsn_sample(frames, seq_len=4, snippet_duration=4, training=True, generator=torch.Generator())
    assert frames == [0, 1, 2, 3, 4]
    assert idx.flatten().tolist() == [p % 5 for p in range(16)]
    assert bounds.tolist() == [[0, 4], [4, 8], [8, 12], [12, 16]]
    t = torch.arange(5)
    tsn_sample(t, 4, 4, training=False)
    assert t.tolist() == [0, 1, 2, 3, 4]


def test_tsn_over_a_frame_subset():
    kept = list(range(10, 20)) + list(range(50, 60))  # e.g. the frames of two kept segments
    idx, _ = tsn_sample(kept, 2, 4, training=False)
    assert idx.tolist() == [[13, 14, 15, 16], [53, 54, 55, 56]]


def test_draw_spatial_aug():
    assert draw_spatial_aug(False).tolist() == list(IDENTITY_AUG)
    g = torch.Generator().manual_seed(0)
    augs = torch.stack([draw_spatial_aug(True, g) for _ in range(3000)])
    assert set(augs[:, 0].long().tolist()) == set(range(len(CROPS)))
    ops = torch.stack([augs[:, 1] != 0, augs[:, 2] != 0, augs[:, 3] != 1], 1)
    assert ops.sum(1).max() == 1  # at most one extra op per video
    assert 0.26 < ops.any(1).float().mean() < 0.34
    assert augs[:, 2].abs().max() <= 20 and augs[:, 3].min() >= 0.5 and augs[:, 3].max() <= 1
    assert (augs[:, 4:] == 0).all() and augs.dtype == torch.float32


def quadrants() -> Image.Image:
    img = np.zeros((40, 60, 3), np.uint8)  # short side 40: the corner squares are 40x40
    img[:20, :30] = (255, 0, 0)
    img[:20, 30:] = (0, 255, 0)
    img[20:, :30] = (0, 0, 255)
    img[20:, 30:] = (255, 255, 0)
    return Image.fromarray(img)


def aug(crop=0, flip=0.0, angle=0.0, bright=1.0):
    return torch.tensor([crop, flip, angle, bright, 0, 0, 0, 0], dtype=torch.float32)


def test_apply_spatial_aug_crops_and_ops():
    img = quadrants()
    corner_pixel = lambda a: tuple(np.asarray(apply_spatial_aug(img, a, 8))[0, 0])  # noqa: E731
    assert corner_pixel(aug(1)) == (255, 0, 0)
    assert corner_pixel(aug(2)) == (255, 0, 0)  # the top-right square starts at x = 20, still red at its left edge
    assert tuple(np.asarray(apply_spatial_aug(img, aug(2), 8))[0, -1]) == (0, 255, 0)
    assert corner_pixel(aug(3)) == (255, 0, 0)
    assert tuple(np.asarray(apply_spatial_aug(img, aug(3), 8))[-1, 0]) == (0, 0, 255)
    plain = np.asarray(apply_spatial_aug(img, aug(4), 8))
    flipped = np.asarray(apply_spatial_aug(img, aug(4, flip=1), 8))
    assert (flipped == plain[:, ::-1]).all()
    darker = np.asarray(apply_spatial_aug(img, aug(4, bright=0.5), 8)).astype(int)
    assert np.abs(darker - plain.astype(int) * 0.5).max() <= 1
    rotated = np.asarray(apply_spatial_aug(img, aug(4, angle=20), 8))
    assert rotated.shape == (8, 8, 3) and (rotated != plain).any()


def test_read_frames_shape_order_and_one_draw(tmp_path):
    d = write_frames(tmp_path / "v", 12)
    indices = torch.tensor([[0, 1, 2], [9, 10, 11]])
    a = aug(2, flip=1)
    video = read_frames(d, indices, a, size=16, threads=3)
    assert video.shape == (2, 3, 3, 16, 16) and video.dtype == torch.uint8
    red = video[:, 0].float().mean(dim=(-1, -2))  # (T, L)
    assert (red - 8 * indices.float()).abs().max() < 4  # frame i has red 8 * i
    assert (read_frames(d, indices, a, size=16, threads=1) == video).all()
    with ThreadPoolExecutor(2) as pool:
        assert (read_frames(d, indices, a, size=16, pool=pool) == video).all()
    for t in range(2):
        for l in range(3):
            expected = np.array(decode_frame(d / f"{indices[t, l] + 1:06d}.jpg", a, 16))
            assert (video[t, :, l] == torch.from_numpy(expected).permute(2, 0, 1)).all()


def test_read_frames_one_draw_for_all_frames(tmp_path):
    d = write_frames(tmp_path / "v", 6)
    for i in range(2, 7):  # every frame the same picture: any per-frame randomness would show
        (d / f"{i:06d}.jpg").write_bytes((d / "000001.jpg").read_bytes())
    a = draw_spatial_aug(True, torch.Generator().manual_seed(3))
    video = read_frames(d, torch.tensor([[0, 1, 2], [3, 4, 5]]), aug(3, angle=-12.5), size=16)
    assert (video == video[:1, :, :1]).all()
    video = read_frames(d, torch.tensor([[0, 1, 2], [3, 4, 5]]), a, size=16)
    assert (video == video[:1, :, :1]).all()


def test_corrupt_and_missing_frames(tmp_path):
    d = write_frames(tmp_path / "v", 4)
    (d / "000002.jpg").write_bytes(b"not a jpeg at all")
    with pytest.raises(DataError, match=r"000002.jpg: cannot decode JPEG.*tools/preprocess"):
        read_frames(d, torch.tensor([[0, 1]]), aug(), 8)
    data = (d / "000003.jpg").read_bytes()
    (d / "000003.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"000003.jpg: cannot decode JPEG"):
        read_frames(d, torch.tensor([[2]]), aug(), 8, threads=1)
    with pytest.raises(DataError, match=r"000009.jpg: frame file missing"):
        read_frames(d, torch.tensor([[8]]), aug(), 8)
