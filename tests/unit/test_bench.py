"""The benchmark's bookkeeping without Ray: targets as ratios, the memory section, the table."""

from __future__ import annotations

import pytest

from benchmarks import harness as bench
from memcluster.errors import ConfigError


def test_memory_section_reports_bytes_per_record_beside_a_plain_dict():
    rows = bench.run_cluster_bench(None, sections=["memory"], records=3000)
    plain, held = rows
    assert plain["unit"] == held["unit"] == "bytes/record"
    assert plain["value"] > 0 and held["value"] > 0
    assert held["ratio"] == pytest.approx(held["value"] / plain["value"])
    assert held["met"] is (held["ratio"] <= 3) and held["target"] == "<=3x"
    table = bench.format_table(rows)
    assert "memory backend, 3000 records" in table and "B/rec" in table


def test_targets_compare_ratios_in_the_stated_direction():
    rows = bench._Rows()
    assert rows.add("s", "fast", 90, ref=100, target=0.8)["met"] is True
    assert rows.add("s", "slow", 70, ref=100, target=0.8)["met"] is False
    assert rows.add("s", "latency", 60, "ms", target=50, at_most=True)["met"] is False
    assert "ratio" not in rows.add("s", "plain", 5)


def test_unknown_sections_and_missing_sources_are_refused():
    with pytest.raises(ConfigError, match="unknown"):
        bench.run_cluster_bench(None, sections=["nope"])

    class NoSources:
        sources: list[str] = []

    with pytest.raises(ConfigError, match="bench_spec"):
        bench.run_cluster_bench(NoSources(), sections=["vector"])
