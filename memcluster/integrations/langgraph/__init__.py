"""A LangGraph store over memcluster: `MemclusterStore(memory, source=None)`.

    store = MemclusterStore(mc.MemoryManager.from_config("memory.yaml"), source="persistent")
    store.put(("users", "42"), "prefs", {"theme": "dark", "level": 3}, ttl=60)   # minutes
    store.search(("users",), filter={"level": {"$gte": 2}})
    graph = builder.compile(store=store)

    # semantic search with LangGraph's own index config, on any source
    store = MemclusterStore(mem, index={"dims": 1536, "embed": embeddings,
                                        "fields": ["text", "metadata.title"]})

Modules: `store` (`MemclusterStore`, `AsyncMemclusterStore`: the same store with the
sync or async TTL-sweeper API, as SqliteStore/AsyncSqliteStore and PostgresStore/
AsyncPostgresStore), `namespaces` (the namespace mapping), `filters` (value filters and
their push-down), `index` (the store-level embedding index), `expiry` (`sweep_ttl`).

Behaviour, and where it departs from LangGraph's stores:

- **Namespaces** `("users", "a/b")` live in the memcluster namespace
  `langgraph/users/a%2Fb`, readable by the memory tools (see `namespaces`).
- **Enumerating namespaces** (`list_namespaces`, and the namespaces a prefix search
  covers) pages through every live record of the source with `MemorySurface.export`:
  always exact (deletes, TTL expiry, writes by other processes or the memory tools show
  at once) at the cost of a scan per listing or prefix search. Rejected: a namespace
  index kept beside the data, which goes stale when records expire or are deleted
  through another path, and whose upkeep races between concurrent writers.
- **Filters** match the item's value; top-level scalar conditions are pushed down to the
  source, dotted names are paths into nested dicts (see `filters`).
- **Search.** No query, or an empty one, means no score: items come newest first
  (`updated_at` descending, then namespace and key). With a query, items rank by score
  when there is an index: the store's `index=` config (`index`), or else a source whose
  capabilities say `text: "semantic"` (the vector backend, which embeds its own
  `text_field`); items put with `index=False`, or with nothing at the indexed fields, are
  unscored and come after the scored ones. Without an index the query is ignored, as in
  LangGraph's stores; `substring_query=True` makes it a case-insensitive substring match
  on key and value instead. Per-put `index=[fields]` needs the store's `index=` config;
  a semantic source alone embeds its own field and ignores the list, as LangGraph's stores
  ignore it without an index.
- **TTL** is in minutes (`ttl=`, `TTLConfig.default_ttl`) and becomes a memcluster TTL in
  seconds, so expired items vanish from every read at once. The TTL is kept in the
  record's metadata so reads can refresh it (`refresh_ttl`, default
  `TTLConfig.refresh_on_read` or True): a refresh re-writes the record conditionally on
  its version (a concurrent write wins and is never overwritten). Gap: a refresh is a
  write, so the memcluster version goes up; the item's `updated_at` is preserved for
  LangGraph, but search's newest-first order counts a refresh as an update.
  `sweep_ttl()`, `start_ttl_sweeper()` and `stop_ttl_sweeper()` exist for code written
  against SqliteStore/PostgresStore (see `expiry`); memcluster itself needs no sweep.
- **Batches** behave like InMemoryStore's: reads (get, search, list) see the state before
  the batch's writes, and of several puts to one item the last wins.
- The adapter's bookkeeping (TTL, `updated_at` across refreshes, vectors, `index=False`)
  lives in the record's metadata under the reserved key "langgraph".
"""

from memcluster.integrations.langgraph.filters import (
    check_filter,
    mirror,
    split_filter,
    value_matches,
)
from memcluster.integrations.langgraph.index import StoreIndex
from memcluster.integrations.langgraph.namespaces import decode_namespace, encode_namespace
from memcluster.integrations.langgraph.store import (
    AsyncMemclusterStore,
    BaseMemclusterStore,
    MemclusterStore,
)

__all__ = [
    "AsyncMemclusterStore",
    "BaseMemclusterStore",
    "MemclusterStore",
    "StoreIndex",
    "check_filter",
    "decode_namespace",
    "encode_namespace",
    "mirror",
    "split_filter",
    "value_matches",
]
