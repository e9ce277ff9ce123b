"""LangGraph's store-level `index` config on any memcluster source: `StoreIndex`.

    store = MemclusterStore(mem, index={"dims": 1536, "embed": embeddings,
                                        "fields": ["text", "metadata.title", "items[*]"]})
    store.put(ns, "k", value)                       # embeds the configured fields
    store.put(ns, "k", value, index=["summary"])    # ... or these fields instead
    store.put(ns, "k", value, index=False)          # ... or nothing: never scored
    store.search(ns, query="...")                   # scored by the best-matching field

Core type: `StoreIndex`, the parsed config: the embeddings (`langgraph`'s
`ensure_embeddings`: an `Embeddings`, a function, an async function or a
"provider:model" string), the dimension, the field paths (LangGraph's JSON-path subset:
`a.b`, `items[*]`, `items[0].x`, `{a,b}`, `$` for the whole value), and the distance.

Decisions:

- **Vectors live in the item's record**, as one float32 blob (one row per embedded text)
  in the adapter's metadata, so they share the item's lifecycle for free: a delete, an
  overwrite, a TTL expiry or a write through the memory tools can never leave a stale
  vector behind. Rejected: a sibling record per vector (a second write to keep in step
  and to expire) and the vector backend's own embedding (one text per record and the
  source's embedder, not the caller's `embed`).
- **Scoring happens in the adapter**: a query reads the candidate records of the target
  namespaces (with the filter pushed down) and scores them with numpy, an item's score
  being its best field's, as in InMemoryStore and PostgresStore. That is exact and works
  on every backend and on a cluster, at the price of reading every candidate per query;
  for large collections prefer a `vector` source without `index=` (the source ranks).
- Distances follow PostgresStore's scores: `cosine` (default; the cosine similarity),
  `inner_product` (the dot product) and `l2` (minus the Euclidean distance).
- `fields` (IndexConfig) and `text_fields` (SqliteIndexConfig's spelling) are both
  accepted; `index_config` keeps the caller's dict as given.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from langchain_core.embeddings import Embeddings
from langgraph.store.base.embed import ensure_embeddings, get_text_at_path, tokenize_path

from memcluster.errors import ConfigError, InvalidValue

DISTANCES = ("cosine", "inner_product", "l2")
WHOLE = "$"


def _paths(fields: Any, where: str, error: type[Exception] = ConfigError
           ) -> tuple[tuple[str, Any], ...]:
    """Field paths with their tokenized form ("$" stays "$": the whole value)."""
    if fields is None:
        fields = [WHOLE]
    elif isinstance(fields, str):
        fields = [fields]
    if not isinstance(fields, (list, tuple)) or not all(isinstance(f, str) for f in fields):
        raise error(f"{where}: must be a list of field paths (str)")
    return tuple((f, WHOLE if f == WHOLE else tokenize_path(f)) for f in fields)


@dataclass(frozen=True)
class StoreIndex:
    """A validated store-level index config (see the module docstring)."""

    config: dict[str, Any]
    embeddings: Embeddings
    dims: int
    paths: tuple[tuple[str, Any], ...]
    distance: str = "cosine"

    @classmethod
    def of(cls, config: Mapping[str, Any] | None) -> StoreIndex | None:
        """Parse LangGraph's `index=` argument; None for no index. Raises ConfigError."""
        if config is None:
            return None
        if not isinstance(config, Mapping):
            raise ConfigError(f"index: must be a dict (dims, embed, fields), "
                              f"got {type(config).__name__}")
        dims = config.get("dims")
        if isinstance(dims, bool) or not isinstance(dims, int) or dims < 1:
            raise ConfigError("index.dims: must be a positive int")
        if config.get("embed") is None:
            raise ConfigError("index.embed: is required (an Embeddings, a function or "
                              "'provider:model')")
        if config.get("fields") is not None and config.get("text_fields") is not None:
            raise ConfigError("index: give fields or text_fields, not both")
        fields = config.get("fields", config.get("text_fields"))
        distance = config.get("distance_type", "cosine")
        if distance not in DISTANCES:
            raise ConfigError(f"index.distance_type: must be one of {', '.join(DISTANCES)}")
        try:
            embeddings = ensure_embeddings(config["embed"])
        except (ValueError, TypeError, ImportError) as exc:
            raise ConfigError(f"index.embed: {exc}") from None
        return cls(dict(config), embeddings, dims, _paths(fields, "index.fields"), distance)

    # ---- writing --------------------------------------------------------------------------

    def texts(self, value: Mapping[str, Any], fields: Sequence[str] | None) -> list[str]:
        """The texts to embed for `value`: the store's fields, or a put's own `index` list."""
        paths = self.paths if fields is None else _paths(list(fields), "index", InvalidValue)
        out: list[str] = []
        for _, path in paths:
            out.extend(get_text_at_path(value, path))
        return out

    def pack(self, vectors: Iterable[Sequence[float]]) -> bytes:
        """Vectors as the blob kept in the record (float32 rows of `dims`)."""
        rows = np.asarray(list(vectors), dtype=np.float32)
        if rows.ndim != 2 or rows.shape[1] != self.dims or not np.isfinite(rows).all():
            raise InvalidValue(f"index.embed returned vectors of shape {rows.shape}, "
                               f"expected (n, {self.dims}) finite numbers")
        return rows.tobytes()

    # ---- reading --------------------------------------------------------------------------

    def query_vector(self, vector: Sequence[float]) -> np.ndarray:
        q = np.asarray(vector, dtype=np.float32)
        if q.shape != (self.dims,) or not np.isfinite(q).all():
            raise InvalidValue(f"index.embed returned a query vector of shape {q.shape}, "
                               f"expected ({self.dims},)")
        return q

    def score(self, query: np.ndarray, blob: Any) -> float | None:
        """The item's score: its best row against `query`; None if it holds no vectors."""
        if not isinstance(blob, bytes) or not blob or len(blob) % (4 * self.dims):
            return None
        rows = np.frombuffer(blob, dtype=np.float32).reshape(-1, self.dims)
        if self.distance == "inner_product":
            return float((rows @ query).max())
        if self.distance == "l2":
            return float(-np.linalg.norm(rows - query, axis=1).min())
        norms = np.linalg.norm(rows, axis=1) * float(np.linalg.norm(query))
        dots = rows @ query
        sims = np.divide(dots, norms, out=np.zeros_like(dots), where=norms > 0)
        return float(sims.max())


__all__ = ["DISTANCES", "StoreIndex"]
