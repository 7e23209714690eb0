"""An on-disk cache of a catalog's embeddings (the encoder itself: ``p2m.common.encoder``)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from p2m.common.encoder import SentenceEncoder


def cached_embeddings(
    cache_dir: Path, key: str, texts: Sequence[str], encoder: SentenceEncoder
) -> np.ndarray:
    """Embeddings of ``texts`` from ``cache_dir/<key>.npy``, computed and saved when absent."""
    path = cache_dir / f"{key}.npy"
    if path.exists():
        vectors = np.load(path)
        if vectors.shape[0] == len(texts):
            return vectors
    vectors = encoder.encode(texts)
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=cache_dir, suffix=".npy", delete=False) as tmp:
        np.save(tmp, vectors)
    os.replace(tmp.name, path)
    return vectors
