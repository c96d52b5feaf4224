import numpy as np
import pytest

from core.plots import confusion_figure, timeline_figure

T = 6
TIMES = np.stack([np.arange(T) * 1.5, np.arange(1, T + 1) * 1.5], axis=1)
CURVES = {"visual": np.linspace(0, 1, T), "audio": np.linspace(1, 0, T)}


def _thumbs():
    out = []
    for i in range(3):
        img = np.zeros((24, 32, 3), dtype=np.uint8)
        img[..., i] = 255
        out.append((1.5 + 3.0 * i, img))
    return out


def _timeline(**kw):
    args = dict(thumbnails=_thumbs(), seg_times=TIMES, curves=CURVES, detected=[], ground_truth=[],
                pred_label="Joy", true_label="Joy", figsize=(6, 3), dpi=50)
    args.update(kw)
    return timeline_figure(**args)


def test_timeline_shape_and_bands_change_pixels(tmp_path):
    base = _timeline()
    assert base.shape == (150, 300, 3) and base.dtype == np.uint8
    with_det = _timeline(detected=[(3.0, 6.0, 0.8)])
    with_gt = _timeline(ground_truth=[[3.0, 6.0]])
    assert (with_det != base).any(axis=2).sum() > 200
    assert (with_gt != base).any(axis=2).sum() > 200
    orange = np.array([255, 127, 14])  # tab:orange, the detection lane at full score
    assert (np.abs(with_det.astype(int) - orange).sum(axis=2) < 30).sum() > 50
    assert (np.abs(base.astype(int) - orange).sum(axis=2) < 30).sum() < 5
    wrong = _timeline(pred_label="Fear")
    assert (wrong != base).any()
    path = tmp_path / "sub" / "timeline.png"
    probs = _timeline(probs=[0.1, 0.7, 0.2], class_names=["Anger", "Joy", "Fear"], threshold=0.5, path=path)
    assert probs.shape == base.shape and (probs != base).any()
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_timeline_thumbnails_are_drawn():
    empty = _timeline(thumbnails=[])
    base = _timeline()
    red = (base[..., 0] > 240) & (base[..., 1] < 20) & (base[..., 2] < 20)
    assert red.sum() > 20 and not ((empty[..., 0] > 240) & (empty[..., 1] < 20) & (empty[..., 2] < 20)).any()


def test_timeline_input_errors():
    with pytest.raises(ValueError, match="curve 'visual' has 5 values for 6 segments"):
        _timeline(curves={"visual": np.zeros(5)})
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
        _timeline(thumbnails=[(0.0, np.zeros((8, 8), dtype=np.uint8))])
    with pytest.raises(ValueError, match="end >= start"):
        _timeline(ground_truth=[[5.0, 1.0]])
    with pytest.raises(ValueError, match="3 class probabilities but 2 class names"):
        _timeline(probs=[0.2, 0.3, 0.5], class_names=["a", "b"])


def test_confusion_figure(tmp_path):
    names = ["anger", "joy", "fear"]
    cm = np.array([[5, 1, 0], [0, 6, 0], [0, 0, 0]])
    a = confusion_figure(cm, names, dpi=40)
    assert a.ndim == 3 and a.shape[2] == 3 and a.dtype == np.uint8
    b = confusion_figure(cm[[1, 0, 2]], names, dpi=40)
    assert a.shape == b.shape and (a != b).any()
    c = confusion_figure(cm, names, normalise=False, dpi=40, path=tmp_path / "cm.png")
    assert (a != c).any() and (tmp_path / "cm.png").stat().st_size > 0
    with pytest.raises(ValueError, match=r"\(3, 3\) for 3 class names"):
        confusion_figure(np.zeros((2, 2)), names)
