"""Offline speech recognition into timed cues: PocketSphinx (English model shipped in its wheel) or a
local Whisper model (a Hugging Face model folder read by `transformers`; nothing is downloaded).

Recognition runs only on the regions a cheap voice-activity check (vad.py) passes, and gives the same cues
for a file whatever ran before it in the process (the cached PocketSphinx decoder is reset per file), so
transcripts do not depend on the worker count or the order of the videos."""
import io
import json
from functools import lru_cache
from pathlib import Path

import numpy as np

from datasets.transcripts import Cue

from .vad import speech_regions

ENGINES = ("none", "pocketsphinx", "whisper")
SAMPLE_RATE = 16000  # both engines take 16 kHz mono


def check_engine(engine: str, whisper_model: Path | None) -> None:
    """Raise ValueError with the fix when the chosen engine cannot run offline here."""
    if engine == "pocketsphinx":
        try:
            import pocketsphinx
        except ImportError as e:
            raise ValueError("--asr pocketsphinx needs the pocketsphinx package: pip install pocketsphinx") from e
        if not (Path(pocketsphinx.get_model_path()) / "en-us" / "en-us").is_dir():
            raise ValueError(f"the pocketsphinx English model is missing under {pocketsphinx.get_model_path()}; "
                             "reinstall pocketsphinx from its wheel")
    elif engine == "whisper":
        if whisper_model is None:
            raise ValueError("--asr whisper needs --whisper-model PATH: a local Whisper model folder in the "
                             "Hugging Face format (config.json, weights, tokenizer and preprocessor files)")
        config = whisper_model / "config.json"
        if not config.is_file():
            raise ValueError(f"{config} not found: --whisper-model must be a local Hugging Face Whisper model folder")
        model_type = json.loads(config.read_text()).get("model_type")
        if model_type != "whisper":
            raise ValueError(f"{config} describes a '{model_type}' model, not 'whisper'")
        try:
            import transformers  # noqa: F401
        except ImportError as e:
            raise ValueError("--asr whisper needs the transformers package: pip install transformers") from e


@lru_cache(maxsize=1)
def _sphinx_decoder():
    """The decoder (about 1 s to build, so one per process) and its initial cepstral mean."""
    from pocketsphinx import Decoder
    decoder = Decoder(samprate=SAMPLE_RATE, loglevel="FATAL")
    return decoder, decoder.get_cmn()


def fresh_sphinx_decoder():
    """The process's decoder, reset to the state it was built in: the feature pipeline and the cepstral mean it
    adapts from every utterance (which otherwise carry one file's audio into the next file's transcript)."""
    decoder, initial_cmn = _sphinx_decoder()
    decoder.reinit_feat()
    decoder.set_cmn(initial_cmn)
    return decoder


def transcribe_pocketsphinx(samples: np.ndarray, regions: list[tuple[float, float]] | None = None) -> list[Cue]:
    """samples: int16 (N,) at 16 kHz; regions: [(start_s, end_s)] to recognise (default: all). One cue per
    voice-activity segment of a region with a non-empty hypothesis."""
    from pocketsphinx import Segmenter
    decoder, cues = fresh_sphinx_decoder(), []
    for start, end in regions if regions is not None else [(0.0, len(samples) / SAMPLE_RATE)]:
        part = samples[int(start * SAMPLE_RATE):int(end * SAMPLE_RATE)]
        for segment in Segmenter(sample_rate=SAMPLE_RATE).segment(io.BytesIO(part.astype("<i2").tobytes())):
            decoder.start_utt()
            decoder.process_raw(segment.pcm, full_utt=True)
            decoder.end_utt()
            hyp = decoder.hyp()
            if hyp is not None and hyp.hypstr.strip():
                cues.append(Cue(start + float(segment.start_time), start + float(segment.end_time), hyp.hypstr.strip()))
    return cues


@lru_cache(maxsize=1)
def _whisper_pipeline(model_dir: str):
    from transformers import pipeline
    return pipeline("automatic-speech-recognition", model=model_dir, device="cpu")


def transcribe_whisper(samples: np.ndarray, model_dir: Path) -> list[Cue]:
    """samples: int16 (N,) at 16 kHz. One cue per timestamped chunk Whisper returns."""
    audio = {"raw": samples.astype(np.float32) / 32768.0, "sampling_rate": SAMPLE_RATE}
    out = _whisper_pipeline(str(model_dir))(audio, return_timestamps=True, chunk_length_s=30)
    duration = len(samples) / SAMPLE_RATE
    cues = []
    for chunk in out.get("chunks", []):
        start, end = chunk["timestamp"]
        text = " ".join(chunk["text"].split())
        if text:
            cues.append(Cue(float(start or 0.0), float(end if end is not None else duration), text))
    return cues


def transcribe(samples: np.ndarray, engine: str, whisper_model: Path | None,
               regions: list[tuple[float, float]] | None = None) -> list[Cue]:
    """samples: int16 (N,) at 16 kHz mono; regions: where the voice-activity check (vad.speech_regions, run
    here when not given) found possible speech. PocketSphinx reads only those; Whisper, which finds its own,
    reads the file when there is any."""
    if regions is None:
        regions = speech_regions(samples, SAMPLE_RATE)
    if not regions:
        return []
    if engine == "pocketsphinx":
        return transcribe_pocketsphinx(samples, regions)
    return transcribe_whisper(samples, whisper_model)
