"""The benchmark's charts from given rows, without Ray: `benchmarks.plots.write_charts`."""

from __future__ import annotations

import pytest

pytest.importorskip("matplotlib", reason="the charts need matplotlib (the bench extra)")

from benchmarks import plots

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def fleet_rows():
    rows = []
    for system, base in (("memcluster", 900.0), ("redis-py", 1200.0), ("ray dict actor", 500.0)):
        for k in (1, 8, 64, 256):
            rows.append({"section": "fleet" if system == "memcluster" else "peers",
                         "name": f"fleet {system} K={k}", "value": base * k ** 0.5,
                         "unit": "ops/s", "p50_ms": 0.5 * k ** 0.5, "p99_ms": 2.0 * k ** 0.5,
                         "system": system, "agents": k})
    return rows


def sweep_rows():
    rows = [{"section": "shards", "name": f"{w} {s}", "value": v, "unit": "ops/s",
             "system": s, "workload": w, **({"agents": 64} if w == "fleet" else {})}
            for s, w, v in (("ray dict actor", "fleet", 1300.0), ("redis-py", "fleet", 1600.0),
                            ("ray dict actor", "store_many", 2.2e5),
                            ("redis-py", "store_many", 2.4e5))]
    for n in (1, 2, 4, 8):
        rows.append({"section": "shards", "name": f"fleet memcluster shards={n}",
                     "value": 5000.0 + 100 * n, "unit": "ops/s", "system": "memcluster",
                     "workload": "fleet", "agents": 64, "shards": n})
        rows.append({"section": "shards", "name": f"store_many memcluster shards={n}",
                     "value": 9e4 + 1e4 * n, "unit": "items/s", "system": "memcluster",
                     "workload": "store_many", "shards": n})
    return rows


def test_write_charts_writes_a_non_empty_png_per_chart(tmp_path):
    out = tmp_path / "bench"  # created by write_charts
    written = plots.write_charts(fleet_rows() + sweep_rows(), out)
    assert sorted(p.name for p in written) == ["fleet_agents.png", "shards.png"]
    for path in written:
        data = path.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 10_000


def test_charts_without_their_rows_are_not_written(tmp_path):
    assert [p.name for p in plots.write_charts(fleet_rows(), tmp_path)] == ["fleet_agents.png"]
    assert plots.write_charts([{"section": "memory", "name": "x", "value": 1.0,
                                "unit": "bytes/record"}], tmp_path / "none") == []


def test_require_matplotlib_names_the_install(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name == "matplotlib":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    with pytest.raises(SystemExit, match=r"pip install matplotlib"):
        plots.require_matplotlib()
