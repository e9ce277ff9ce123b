"""Which node hosts each shard: eligible nodes, failure domains, one choice per shard.

Core pieces, all pure (no Ray), under a `config.PlacementPolicy` (the config's
`placement:` section: `domain` is "node" or a node label such as a zone, `resources` the
custom resources a node must offer): `eligible(nodes, policy)`, `domain_of(node, policy)`,
`domain_plan(...)` (one physical domain per logical one, moving as few shards as it
can), `choose_node(...)` (where one shard incarnation should run), `misplaced(...)` (the
moves a rebalance makes) and `domain_report(...)`
(whether every key's N replicas sit in N distinct failure domains, for `status`, a metric
and a log warning).

How it fits the ring: the ring deals shards over logical domains ("d0", "d1", ...) and a
key's preference list takes one shard per logical domain (`ring.py`). Here each logical
domain is mapped to a physical one: the domain of the nodes its live shards run on. A shard
(re)starts on its previous node if that node is still eligible and its domain is not taken
by another logical domain (a node-local disk reopens its files there); else in its logical
domain's physical domain; else in a physical domain no other logical domain of the source
uses; else, with fewer physical domains than logical ones, on the least-loaded eligible
node, which `domain_report` then flags. Within a domain the least-loaded node wins (shards
of every source count). Decisions: by default a node with no CPU (the Helm chart's head,
`ray start --num-cpus 0`) hosts no shard and no manager; the rejected alternative,
placement groups with a SPREAD strategy, cannot express "keep this shard on its node" nor
domains coarser than a node.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from memcluster.cluster.control.runtime import Node
from memcluster.config import NODE, PlacementPolicy


def eligible(nodes: Iterable[Node], policy: PlacementPolicy) -> list[Node]:
    """The live nodes that may host shards and the manager under `policy`."""
    out = []
    for node in nodes:
        if not node.alive:
            continue
        if policy.resources:
            if all(node.resources.get(r, 0.0) >= v for r, v in policy.resources.items()):
                out.append(node)
        elif node.resources.get("CPU", 0.0) > 0:
            out.append(node)
    return out


def domain_of(node: Node, policy: PlacementPolicy) -> str:
    """The failure domain of `node`: its id, or the value of the policy's label (a node
    without the label is a domain of its own, named after it)."""
    if policy.domain == NODE:
        return node.node_id
    return node.labels.get(policy.domain) or f"{policy.domain}?{node.node_id}"


def domain_plan(logical: Mapping[str, str], placed: Mapping[str, str],
                nodes: Iterable[Node], policy: PlacementPolicy, *,
                load: Mapping[str, int] | None = None) -> dict[str, str]:
    """Map the source's logical domains one-to-one onto physical ones, moving as few shards
    as it can: the (logical, physical) pairs hosting most shards are kept first, then each
    logical domain left takes the emptiest physical domain nobody uses. A logical domain
    missing from the answer has none left (fewer physical domains than logical ones).
    `placed`: shard id -> node of the source's running shards."""
    candidates = eligible(nodes, policy)
    by_id = {n.node_id: n for n in candidates}
    load = Counter(load or {})
    together = Counter((logical[sid], domain_of(by_id[node_id], policy))
                       for sid, node_id in placed.items()
                       if sid in logical and node_id in by_id)
    plan: dict[str, str] = {}
    for (ldom, pdom), _ in sorted(together.items(), key=lambda kv: (-kv[1], kv[0])):
        if ldom not in plan and pdom not in plan.values():
            plan[ldom] = pdom
    weight: Counter[str] = Counter()
    for n in candidates:
        weight[domain_of(n, policy)] += load[n.node_id]
    for ldom in sorted(set(logical.values()) - set(plan)):
        free = [d for d in weight if d not in plan.values()]
        if not free:
            break
        plan[ldom] = min(free, key=lambda d: (weight[d], d))
    return plan


def _least_loaded(pool: Iterable[Node], load: Mapping[str, int]) -> str:
    return min(pool, key=lambda n: (load.get(n.node_id, 0), n.node_id)).node_id


def choose_node(shard_id: str, logical: Mapping[str, str], placed: Mapping[str, str],
                nodes: Iterable[Node], policy: PlacementPolicy, *,
                load: Mapping[str, int] | None = None,
                previous: str | None = None) -> str | None:
    """The node the next incarnation of `shard_id` should run on.

    `logical` maps the source's shard ids to their logical domains (the ring's), `placed`
    maps the source's other running shards to their nodes, `load` counts shards per node
    over every source. Its previous node while no other logical domain uses that node's
    domain (a node-local disk reopens there); else a node of the domain `domain_plan`
    gives its logical domain; else, short of domains, the least-loaded node (which
    `domain_report` flags). None when no node is eligible (the caller lets Ray decide).
    """
    candidates = eligible(nodes, policy)
    if not candidates:
        return None
    load = Counter(load or {})
    by_id = {n.node_id: n for n in candidates}
    mine = logical[shard_id]
    others = {domain_of(by_id[node_id], policy) for sid, node_id in placed.items()
              if sid != shard_id and node_id in by_id and logical.get(sid, mine) != mine}
    if previous in by_id and domain_of(by_id[previous], policy) not in others:
        return previous
    rest = {sid: node_id for sid, node_id in placed.items() if sid != shard_id}
    target = domain_plan(logical, rest, candidates, policy, load=load).get(mine)
    pool = [n for n in candidates if domain_of(n, policy) == target]
    return _least_loaded(pool or candidates, load)


def misplaced(logical: Mapping[str, str], placed: Mapping[str, str], nodes: Iterable[Node],
              policy: PlacementPolicy, *, load: Mapping[str, int] | None = None
              ) -> dict[str, str]:
    """The moves that give each logical domain a physical domain of its own
    (`domain_plan` over every running shard): shard id -> node to restart it on. A shard
    whose logical domain got no physical domain stays where it is."""
    candidates = eligible(nodes, policy)
    by_id = {n.node_id: n for n in candidates}
    load = Counter(load or {})
    plan = domain_plan(logical, placed, candidates, policy, load=load)
    moves: dict[str, str] = {}
    for sid in sorted(logical):
        target = plan.get(logical[sid])
        here = by_id.get(placed.get(sid, ""))
        if target is None or (here is not None and domain_of(here, policy) == target):
            continue
        node = _least_loaded([n for n in candidates if domain_of(n, policy) == target], load)
        moves[sid] = node
        load[node] += 1
    return moves


def domain_report(logical: Mapping[str, str], placed: Mapping[str, str],
                  nodes: Iterable[Node], policy: PlacementPolicy, replicas: int,
                  *, node_local: bool = False) -> dict[str, Any]:
    """Whether every key of a source has its `replicas` copies in distinct failure
    domains, with the reasons when not (a list of one-line warnings)."""
    by_id = {n.node_id: n for n in nodes}
    logical_count = len(set(logical.values()))
    physical_of: dict[str, set[str]] = {}
    for sid, node_id in placed.items():
        node = by_id.get(node_id)
        if node is not None and sid in logical:
            physical_of.setdefault(logical[sid], set()).add(domain_of(node, policy))
    users: dict[str, set[str]] = {}
    for ldom, physical in physical_of.items():
        for dom in physical:
            users.setdefault(dom, set()).add(ldom)
    shared = sorted(dom for dom, ldoms in users.items() if len(ldoms) > 1)
    warnings = []
    if replicas > 1 and logical_count < replicas:
        warnings.append(f"{replicas} replicas but only {logical_count} failure domain(s): "
                        "some keys have several copies in one domain")
    if replicas > 1 and shared:
        warnings.append(f"failure domain(s) {', '.join(shared)} host shards of several "
                        "logical domains: some keys have several copies there")
    hosts = {node_id for node_id in placed.values()}
    if node_local and replicas == 1 and len(hosts) > 1:
        warnings.append("node-local storage with 1 replica on several nodes: a lost node "
                        "loses its shards' data (set replicas >= 2)")
    return {"domain": policy.domain, "logical_domains": logical_count,
            "physical_domains": len(users), "replicas": replicas,
            "ok": not warnings, "warnings": warnings}


def target_domain_count(nodes: Iterable[Node], policy: PlacementPolicy, shards: int) -> int:
    """How many logical domains a source of `shards` shards should have: one per
    eligible physical domain, at most one per shard, at least one."""
    domains = {domain_of(n, policy) for n in eligible(nodes, policy)}
    return max(1, min(len(domains), shards))


__all__ = ["choose_node", "domain_of", "domain_plan", "domain_report", "eligible",
           "misplaced", "target_domain_count"]
