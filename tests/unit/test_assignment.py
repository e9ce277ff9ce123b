"""Pure placement decisions (`cluster/control/assignment.py`) on fake nodes: eligibility,
one physical domain per logical domain, restarts in place, and the moves a rebalance
makes after a node loss and a new node (the multi-node scenario, without Ray)."""

from __future__ import annotations

import random

import pytest

from memcluster.cluster.control.assignment import (
    choose_node,
    domain_plan,
    domain_report,
    eligible,
    misplaced,
    target_domain_count,
)
from memcluster.cluster.control.runtime import Node
from memcluster.config import PlacementPolicy

POLICY = PlacementPolicy()
HEAD = Node("head", resources={"CPU": 0.0})


def _worker(name: str, **labels: str) -> Node:
    return Node(name, resources={"CPU": 1.0}, labels=labels)


def _logical(shards: int, domains: int) -> dict[str, str]:
    return {f"c/{i}": f"d{i % domains}" for i in range(shards)}


def _place_all(logical: dict[str, str], nodes: list[Node]) -> dict[str, str]:
    """Start every shard in turn, as a fresh manager does."""
    placed: dict[str, str] = {}
    for sid in logical:
        node = choose_node(sid, logical, placed, nodes, POLICY)
        assert node is not None
        placed[sid] = node
    return placed


def _ok(logical: dict[str, str], placed: dict[str, str], nodes: list[Node]) -> bool:
    return domain_report(logical, placed, nodes, POLICY, replicas=2)["ok"]


def test_a_node_without_cpu_hosts_nothing_and_resources_select_nodes():
    gpu = Node("g", resources={"CPU": 4.0, "memcluster": 1.0})
    plain = _worker("w")
    assert [n.node_id for n in eligible([HEAD, plain, gpu], POLICY)] == ["w", "g"]
    wanting = PlacementPolicy(resources={"memcluster": 1.0})
    assert [n.node_id for n in eligible([HEAD, plain, gpu], wanting)] == ["g"]
    assert choose_node("c/0", {"c/0": "d0"}, {}, [HEAD], POLICY) is None
    assert target_domain_count([HEAD, plain, gpu], POLICY, shards=6) == 2


def test_fresh_placement_gives_each_logical_domain_its_own_node():
    nodes = [HEAD, _worker("a"), _worker("b"), _worker("c")]
    logical = _logical(6, 3)
    placed = _place_all(logical, nodes)
    assert "head" not in placed.values()
    assert _ok(logical, placed, nodes)
    assert domain_plan(logical, placed, nodes, POLICY) == {
        ldom: next(placed[s] for s in logical if logical[s] == ldom)
        for ldom in set(logical.values())}
    assert misplaced(logical, placed, nodes, POLICY) == {}


def test_a_restart_stays_on_its_node_unless_another_domain_took_it():
    nodes = [_worker("a"), _worker("b")]
    logical = {"c/0": "d0", "c/1": "d1"}
    assert choose_node("c/0", logical, {"c/1": "b"}, nodes, POLICY, previous="a") == "a"
    # its node now hosts the other logical domain: it goes to a free one
    assert choose_node("c/0", logical, {"c/1": "a"}, nodes, POLICY, previous="a") == "b"


def test_zones_are_the_domain_when_the_policy_names_a_label():
    zoned = PlacementPolicy(domain="zone")
    nodes = [_worker("a1", zone="a"), _worker("a2", zone="a"), _worker("b1", zone="b")]
    logical = {"c/0": "d0", "c/1": "d1", "c/2": "d0", "c/3": "d1"}
    placed: dict[str, str] = {}
    for sid in logical:
        placed[sid] = choose_node(sid, logical, placed, nodes, zoned)  # type: ignore[assignment]
    zone = {n.node_id: n.labels["zone"] for n in nodes}
    assert {zone[placed["c/0"]], zone[placed["c/2"]]} != {zone[placed["c/1"]]}
    assert domain_report(logical, placed, nodes, zoned, replicas=2)["ok"]


def test_a_lost_node_then_a_new_one_the_rebalance_restores_distinct_domains():
    """The multi-node scenario: 3 workers, 6 shards over 3 logical domains; the node of
    one domain dies, its shards restart doubled up on survivors (flagged), a node is
    added, and the moves `misplaced` asks for make the placement sufficient again."""
    a, b, c, d = (_worker(x) for x in "abcd")
    logical = _logical(6, 3)
    placed = _place_all(logical, [a, b, c])
    lost = placed["c/0"]
    survivors = [n for n in (a, b, c) if n.node_id != lost]
    for sid in [s for s, n in placed.items() if n == lost]:
        rest = {s: n for s, n in placed.items() if n != lost}
        placed[sid] = choose_node(sid, logical, rest, survivors, POLICY,
                                  previous=placed[sid])  # type: ignore[assignment]
    assert lost not in placed.values()
    assert not _ok(logical, placed, survivors)      # three logical domains, two nodes
    nodes = [*survivors, d]
    moves = misplaced(logical, placed, nodes, POLICY)
    assert moves and set(moves.values()) == {"d"}
    assert len(moves) == 2                          # the lost domain's shards, no more
    placed.update(moves)
    assert _ok(logical, placed, nodes)
    assert misplaced(logical, placed, nodes, POLICY) == {}


@pytest.mark.parametrize("round_", range(50))
def test_random_placements_are_repaired_whenever_domains_suffice(round_):
    seed = random.randrange(1 << 30)
    print(f"seed {seed}")
    rng = random.Random(seed)
    nodes = [_worker(f"n{i}") for i in range(rng.randint(2, 6))]
    domains = rng.randint(2, len(nodes))
    logical = _logical(rng.randint(domains, 12), domains)
    placed = {sid: rng.choice(nodes).node_id for sid in logical}
    moves = misplaced(logical, placed, nodes, POLICY)
    after = {**placed, **moves}
    assert _ok(logical, after, nodes), (seed, placed, moves)
    # moves only what it must: the shards whose pair was kept never move
    plan = domain_plan(logical, placed, nodes, POLICY)
    assert all(plan[logical[s]] != placed[s] for s in moves), seed
