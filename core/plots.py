"""Figures for TensorBoard and reports, rendered off-screen (Agg canvas, no pyplot state).

Each function returns the rendered figure as an (H, W, 3) uint8 RGB array and, given `path`, also
writes it as a PNG (parent folders created).
"""
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path

import matplotlib.image
import numpy as np
from matplotlib import font_manager
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ft2font import FT2Font

DETECTED_COLOUR = "tab:orange"
GT_COLOUR = "tab:green"
CURVE_COLOURS = ("tab:blue", "tab:red", "tab:purple", "tab:brown", "tab:olive")


@lru_cache(maxsize=None)
def _glyphs(font_path: str) -> frozenset:
    """The code points a font file has glyphs for."""
    return frozenset(FT2Font(font_path).get_charmap())


def drawable(text: str) -> tuple[str, dict]:
    """(text, font keywords) that draw without missing glyphs (matplotlib warns once per missing glyph and draws
    boxes): as is with the default font; else with an installed font that has the missing glyphs as fallback
    (e.g. a CJK font for a Japanese file name); else with each missing character replaced by '?'."""
    default = font_manager.findfont(font_manager.FontProperties())
    missing = {c for c in text if not c.isspace() and ord(c) not in _glyphs(default)}
    if not missing:
        return text, {}
    for entry in font_manager.fontManager.ttflist:
        if entry.name.startswith("Last Resort"):  # matplotlib's own fallback: a box for every code point
            continue
        try:
            if all(ord(c) in _glyphs(entry.fname) for c in missing):
                return text, {"fontfamily": [font_manager.FontProperties(fname=default).get_name(), entry.name]}
        except (OSError, RuntimeError):  # an unreadable font file
            continue
    return "".join("?" if c in missing else c for c in text), {}


def _render(fig: Figure, path) -> np.ndarray:
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    image = np.asarray(canvas.buffer_rgba())[..., :3].copy()  # (H, W, 3)
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        matplotlib.image.imsave(path, image)
    return image


def _image(img, what: str) -> np.ndarray:
    a = np.asarray(img)
    if a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint8 or 0 in a.shape:
        raise ValueError(f"{what} must be an (H, W, 3) uint8 RGB image; got shape {a.shape}, dtype {a.dtype}")
    return a


def _spans(segs, what: str) -> list[tuple[float, float]]:
    out = []
    for seg in segs:
        s, e = float(seg[0]), float(seg[1])
        if not (np.isfinite(s) and np.isfinite(e) and e >= s):
            raise ValueError(f"{what}: a segment must be finite [start, end] with end >= start; got {tuple(seg)}")
        out.append((s, e))
    return out


def timeline_figure(thumbnails: Sequence, seg_times, curves: Mapping, detected: Sequence = (),
                    ground_truth: Sequence = (), pred_label: str = "", true_label: str = "", probs=None,
                    class_names: Sequence[str] | None = None, threshold: float | None = None,
                    title: str = "", path=None, figsize=(11.0, 5.0), dpi: int = 100) -> np.ndarray:
    """One video along time: frame thumbnails (top), attention curves (middle), segments (bottom).

    thumbnails: [(time_s, (H, W, 3) uint8), ...] centred on their times (aspect kept; shifted to stay
    inside the time axis, shrunk when neighbours would overlap).
    seg_times (T, 2) seconds; curves {name: (T,)} drawn at segment centres (pass them normalised to
    compare modalities; `threshold` draws the detection threshold on that scale).
    detected [(start, end, score), ...] and ground_truth [[start, end], ...]: coloured bands on the
    curves and one lane each in the bottom strip, detections labelled with their score.
    The title names predicted vs true label (green when equal, red otherwise); probs (C,) adds a bar
    chart of class probabilities labelled by class_names (indices when None).
    """
    times = np.asarray(seg_times, dtype=np.float64)
    if times.ndim != 2 or times.shape[1] != 2 or times.shape[0] == 0:
        raise ValueError(f"seg_times must be (T, 2); got shape {times.shape}")
    ys = _curves(curves, times.shape[0])
    thumbs = [(float(t), _image(img, f"thumbnail at {t} s")) for t, img in thumbnails]
    det = [(*_spans([d[:2]], "detected")[0], float(d[2])) for d in detected]
    gt = _spans(ground_truth, "ground_truth")
    x0 = min([times.min()] + [s for s, _, _ in det] + [s for s, _ in gt])
    x1 = max([times.max()] + [e for _, e, _ in det] + [e for _, e in gt])
    if x1 <= x0:
        x1 = x0 + 1.0

    fig = Figure(figsize=figsize, dpi=dpi)
    cols = dict(ncols=2, width_ratios=(4.2, 1.0)) if probs is not None else dict(ncols=1)
    grid = fig.add_gridspec(nrows=3, height_ratios=(1.3, 2.2, 0.8), left=0.1, right=0.98, top=0.88,
                            bottom=0.1, hspace=0.08, wspace=0.35, **cols)
    ax_img = fig.add_subplot(grid[0, 0])
    _draw_thumbnails(ax_img, thumbs, x0, x1, (figsize[0] * dpi, figsize[1] * dpi))
    _draw_curves(fig.add_subplot(grid[1, 0], sharex=ax_img), times.mean(axis=1), ys, det, gt, threshold)
    _draw_segments(fig.add_subplot(grid[2, 0], sharex=ax_img), det, gt, x0, x1)
    head = f"pred: {pred_label}  |  true: {true_label}"
    text, font = drawable(f"{title}\n{head}" if title else head)
    fig.suptitle(text, fontsize=11, color="darkgreen" if str(pred_label) == str(true_label) else "darkred", **font)
    if probs is not None:
        _draw_probs(fig.add_subplot(grid[:, 1]), probs, class_names, true_label)
    return _render(fig, path)


def _curves(curves: Mapping, T: int) -> dict:
    ys = {}
    for name, c in curves.items():
        y = np.asarray(c, dtype=np.float64).reshape(-1)
        if y.shape != (T,):
            raise ValueError(f"curve {name!r} has {y.size} values for {T} segments")
        ys[name] = y
    return ys


def _draw_thumbnails(ax, thumbs: list, x0: float, x1: float, fig_px: tuple) -> None:
    """Thumbnails centred on their times, aspect kept, inside [x0, x1], shrunk when neighbours would overlap."""
    ax.set_xlim(x0, x1)
    ax.set_ylim(0.0, 1.0)
    ax.set_yticks([])
    ax.tick_params(labelbottom=False, bottom=False)
    for spine in ax.spines.values():
        spine.set_visible(False)
    if not thumbs:
        return
    box = ax.get_position()  # figure fraction
    px_w, px_h = box.width * fig_px[0], box.height * fig_px[1]
    sec_per_px = (x1 - x0) / px_w
    slot = (x1 - x0) / len(thumbs) * 0.96
    for t, img in thumbs:
        h = 0.96
        w = h * px_h * img.shape[1] / img.shape[0] * sec_per_px
        if w > slot:
            h, w = h * slot / w, slot
        left = min(max(t - w / 2, x0), x1 - w)  # keep the whole thumbnail inside the time axis
        ax.imshow(img, extent=(left, left + w, 0.5 - h / 2, 0.5 + h / 2), aspect="auto", interpolation="bilinear")
    ax.set_xlim(x0, x1)
    ax.set_ylim(0.0, 1.0)


def _draw_curves(ax, centres, ys: dict, det: list, gt: list, threshold) -> None:
    for s, e in gt:
        ax.axvspan(s, e, color=GT_COLOUR, alpha=0.15, lw=0)
    for s, e, _ in det:
        ax.axvspan(s, e, color=DETECTED_COLOUR, alpha=0.2, lw=0)
    for i, (name, y) in enumerate(ys.items()):
        ax.plot(centres, y, "-o", ms=3.5, lw=1.6, color=CURVE_COLOURS[i % len(CURVE_COLOURS)], label=name)
    if threshold is not None:
        ax.axhline(threshold, color="0.35", ls="--", lw=1.0, label=f"threshold {threshold:g}")
    ax.set_ylabel("attention")
    ax.tick_params(labelbottom=False)
    ax.grid(alpha=0.3)
    if ys or threshold is not None:
        ax.legend(loc="upper right", fontsize=8, framealpha=0.8)


def _draw_segments(ax, det: list, gt: list, x0: float, x1: float) -> None:
    ax.broken_barh([(s, e - s) for s, e in gt], (1.15, 0.7), color=GT_COLOUR)
    top = max([sc for _, _, sc in det] + [1e-12])
    for s, e, sc in det:
        ax.broken_barh([(s, e - s)], (0.15, 0.7), color=DETECTED_COLOUR, alpha=0.35 + 0.65 * max(sc, 0) / top)
        ax.text((s + e) / 2, 0.5, f"{sc:.2f}", ha="center", va="center", fontsize=7)
    ax.set_ylim(0.0, 2.0)
    ax.set_yticks([0.5, 1.5], ["detected", "ground truth"], fontsize=8)
    ax.set_xlabel("time (s)")
    ax.set_xlim(x0, x1)


def _draw_probs(ax, probs, class_names, true_label) -> None:
    p = np.asarray(probs, dtype=np.float64).reshape(-1)
    names = [str(n) for n in class_names] if class_names is not None else [str(i) for i in range(p.size)]
    if len(names) != p.size:
        raise ValueError(f"{p.size} class probabilities but {len(names)} class names")
    colours = ["0.6"] * p.size
    colours[int(p.argmax())] = DETECTED_COLOUR
    if str(true_label) in names:
        colours[names.index(str(true_label))] = GT_COLOUR
    ax.barh(np.arange(p.size), p, color=colours)
    ax.set_yticks(np.arange(p.size), [drawable(n)[0] for n in names], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0.0, 1.0)
    ax.set_xlabel("probability")


def confusion_figure(cm, class_names: Sequence[str], normalise: bool = True, title: str = "",
                     path=None, dpi: int = 100) -> np.ndarray:
    """Confusion matrix (rows true, columns predicted) as a heat map with the value in each cell.

    normalise=True divides each row by its count (recall per class); a class without samples shows an
    empty row ('-').
    """
    counts = np.asarray(cm, dtype=np.float64)
    C = len(class_names)
    if counts.shape != (C, C):
        raise ValueError(f"confusion matrix must be ({C}, {C}) for {C} class names; got {counts.shape}")
    if normalise:
        rows = counts.sum(axis=1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            values = np.where(rows > 0, counts / rows, np.nan)
        vmax = 1.0
    else:
        values, vmax = counts, max(counts.max(), 1.0)

    side = max(4.0, 0.55 * C + 2.2)
    fig = Figure(figsize=(side + 0.8, side), dpi=dpi)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(np.nan_to_num(values, nan=0.0), cmap="Blues", vmin=0.0, vmax=vmax)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    for i in range(C):
        for j in range(C):
            v = values[i, j]
            text = "-" if np.isnan(v) else (f"{v:.2f}" if normalise else f"{int(v)}")
            ax.text(j, i, text, ha="center", va="center", fontsize=8,
                    color="white" if not np.isnan(v) and v > 0.6 * vmax else "black")
    names = [str(n) for n in class_names]
    ax.set_xticks(np.arange(C), names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(np.arange(C), names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or ("confusion (row-normalised)" if normalise else "confusion (counts)"))
    fig.tight_layout()
    return _render(fig, path)
