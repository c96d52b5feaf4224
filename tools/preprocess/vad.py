"""A cheap voice-activity check before speech recognition: frame energy against the file's own noise floor,
plus the zero-crossing rate, in numpy (about 0.1 s for 10 minutes of audio).

Speech rises and falls with its syllables, so its loud frames stand well above the quietest tenth of the file;
silence, a steady tone, hum or steady noise do not (their level is their floor), and are skipped. What passes is
only a candidate: the recogniser then runs on these regions alone, not on the whole file.
"""
import numpy as np

FRAME_S, HOP_S = 0.03, 0.01
ABS_FLOOR_DB = -55.0  # dBFS: quieter frames are never speech
ABOVE_FLOOR_DB = 10.0  # a speech frame stands this far above the file's 10th-percentile frame level
MAX_ZCR = 0.35  # zero crossings per sample: voiced speech is well below white noise (about 0.5)
MERGE_GAP_S, MIN_SPEECH_S, PAD_S = 0.3, 0.2, 0.2


def frame_stats(samples: np.ndarray, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """samples int16 (N,) -> per 30 ms frame (three 10 ms hops, hop 10 ms): level in dBFS (F,) and zero-crossing
    rate (F,). Sums per hop first, so one pass over the samples."""
    hop, k = int(HOP_S * sample_rate), round(FRAME_S / HOP_S)
    n_hops = samples.size // hop
    if n_hops < k:
        return np.zeros(0), np.zeros(0)
    x = samples[: n_hops * hop].astype(np.float32) / 32768.0
    hop_energy = np.einsum("ij,ij->i", x.reshape(n_hops, hop), x.reshape(n_hops, hop))  # (H,)
    flips = np.signbit(x[1:]) != np.signbit(x[:-1])
    hop_flips = np.add.reduceat(flips, np.arange(0, flips.size, hop)).astype(np.float32)  # (H,)
    window = np.ones(k, np.float32)
    power = np.convolve(hop_energy, window, "valid") / (k * hop)  # (F,)
    crossings = np.convolve(hop_flips, window, "valid") / (k * hop)  # (F,)
    return 10 * np.log10(power + 1e-12), crossings


def speech_regions(samples: np.ndarray, sample_rate: int) -> list[tuple[float, float]]:
    """[(start_s, end_s)] of the stretches that may hold speech (merged, padded, in order); [] when none do."""
    level, zcr = frame_stats(samples, sample_rate)
    if level.size == 0:
        return []
    threshold = max(ABS_FLOOR_DB, float(np.percentile(level, 10)) + ABOVE_FLOOR_DB)
    voiced = (level > threshold) & (zcr < MAX_ZCR)  # (F,)
    regions, start, last = [], None, None
    for i in np.flatnonzero(voiced):
        if start is not None and (i - last) * HOP_S > MERGE_GAP_S:
            regions.append((start, last))
            start = None
        start = i if start is None else start
        last = i
    if start is not None:
        regions.append((start, last))
    duration = samples.size / sample_rate
    out = []
    for a, b in regions:
        s, e = float(a * HOP_S), float(b * HOP_S + FRAME_S)
        if e - s >= MIN_SPEECH_S:
            s, e = max(0.0, s - PAD_S), min(duration, e + PAD_S)
            if out and s <= out[-1][1]:
                out[-1] = (out[-1][0], e)
            else:
                out.append((s, e))
    return out
