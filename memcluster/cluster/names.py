"""Names: how a cluster's Ray actors, Ray namespace and backend prefixes are spelled.

One place so the manager actor, the client, the embedded launcher and the CLI can never
disagree. Ray namespace `memcluster-<cluster>`, manager actor `<cluster>/manager`, shard
actors `<cluster>/<source>/<index>`; a shard id (what the ring hashes over) is
`<source>/<index>`, and a shard's backend prefix is its full actor name, so shards that
share one Redis or Postgres never see each other's keys.
"""

from __future__ import annotations

import re

from memcluster.errors import ConfigError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


def check_cluster_name(name: str) -> str:
    """Return `name` if usable as a cluster name (letters, digits, `_.-`, at most 63)."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(f"name: cluster name must match {_NAME.pattern}, got {name!r}")
    return name


def ray_namespace(cluster: str) -> str:
    return f"memcluster-{cluster}"


def manager_name(cluster: str) -> str:
    return f"{cluster}/manager"


def shard_id(source: str, index: int) -> str:
    """The id the ring hashes over (stable across restarts of the shard)."""
    return f"{source}/{index}"


def shard_index(sid: str) -> int:
    return int(sid.rsplit("/", 1)[1])


def shard_source(sid: str) -> str:
    """The source a shard id belongs to (`<source>/<index>` -> `<source>`)."""
    return sid.rsplit("/", 1)[0]


def shard_actor_name(cluster: str, sid: str) -> str:
    """`<cluster>/<source>/<index>`: the Ray actor name, also the backend prefix."""
    return f"{cluster}/{sid}"
