"""PNG charts of the benchmark rows, for `benchmarks/cluster_ops.py --plot DIR`.

`write_charts(rows, out_dir)` draws what the rows hold and returns the files written:

- `fleet_agents.png`: the agent fleet's ops/s (left) and p50/p99 latency (right) against
  the number of agents K, one line per system (rows of the fleet and peers sections,
  which carry `system` and `agents`);
- `shards.png`: fleet ops/s (left) and store_many items/s (right) against the shard
  count of an N=1 memory source, the peers that do not shard (Ray dict actor, redis-py)
  as horizontal lines measured in the same run (rows of `benchmarks/sweep.py`).

Pure: no Ray, only matplotlib (Agg, through `Figure`, so no display or pyplot state).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

INSTALL_HINT = ("--plot needs matplotlib: pip install matplotlib "
                "(or pip install -e '.[bench]')")
STYLE = {  # system -> (color, line style): one look per system across the charts
    "memcluster": ("tab:blue", "-"),
    "redis-py": ("tab:red", "-"),
    "ray dict actor": ("tab:green", "-"),
    "langgraph InMemoryStore": ("tab:gray", ":"),
}
IN_PROCESS = {"langgraph InMemoryStore"}  # a ceiling for a store that is not distributed
NOTE = "one run, same machine: compare the ratios, not the absolute numbers"


def require_matplotlib() -> None:
    """Exit with the install hint when matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise SystemExit(INSTALL_HINT) from None


def write_charts(rows: Iterable[dict[str, Any]], out_dir: str | Path) -> list[Path]:
    """Write the charts the rows have data for into `out_dir` (created); -> their paths."""
    rows = list(rows)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, draw in (("fleet_agents.png", plot_agents), ("shards.png", plot_shards)):
        if draw(rows, out / name):
            written.append(out / name)
    return written


def _style(system: str) -> dict[str, Any]:
    color, line = STYLE.get(system, (None, "--"))
    return {"color": color, "linestyle": line}


def _figure(title: str) -> tuple[Any, Any]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.2), layout="constrained")
    fig.suptitle(f"{title}\n{NOTE}", fontsize=10)
    return fig, fig.subplots(1, 2)


def plot_agents(rows: list[dict[str, Any]], path: Path) -> bool:
    """Fleet throughput and latency against K; False (nothing written) without fleet rows."""
    from matplotlib.ticker import NullLocator

    series: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        if r.get("section") in ("fleet", "peers") and "agents" in r and "system" in r:
            series.setdefault(r["system"], []).append(r)
    if not series:
        return False
    fig, (rate_ax, lat_ax) = _figure("Agent fleet: 75% retrieve / 20% store / 5% search, "
                                     "one namespace per agent")
    for system, points in series.items():
        points.sort(key=lambda r: r["agents"])
        ks = [r["agents"] for r in points]
        style = _style(system)
        label = f"{system} (in-process)" if system in IN_PROCESS else system
        rate_ax.plot(ks, [r["value"] for r in points], marker="o", label=label, **style)
        lat_ax.plot(ks, [r["p50_ms"] for r in points], marker="o", label=f"{system} p50",
                    **style)
        lat_ax.plot(ks, [r["p99_ms"] for r in points], marker="^", alpha=0.6,
                    label=f"{system} p99", **{**style, "linestyle": "--"})
    rate_ax.set(xscale="log", yscale="log", xlabel="agents (K)", ylabel="ops/s",
                title="throughput")
    lat_ax.set(xscale="log", yscale="log", xlabel="agents (K)", ylabel="latency per op, ms",
               title="latency (p50 solid, p99 dashed)")
    for ax in (rate_ax, lat_ax):
        ks = sorted({r["agents"] for pts in series.values() for r in pts})
        ax.set_xticks(ks, [str(k) for k in ks])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.savefig(path, dpi=110)
    return True


def plot_shards(rows: list[dict[str, Any]], path: Path) -> bool:
    """Throughput against shard count; False (nothing written) without sweep rows."""
    from matplotlib.ticker import NullLocator

    sweep = [r for r in rows if r.get("section") == "shards"]
    if not any("shards" in r for r in sweep):
        return False
    agents = next((r["agents"] for r in sweep if r.get("workload") == "fleet"), None)
    fig, axes = _figure("Throughput against shard count (memcluster memory source, N=1)")
    panels = (("fleet", f"fleet of {agents} agents", "ops/s"),
              ("store_many", "store_many of 1000 items", "items/s"))
    counts = sorted({r["shards"] for r in sweep if "shards" in r})
    for ax, (workload, title, unit) in zip(axes, panels, strict=True):
        mine = sorted((r for r in sweep if r.get("workload") == workload and "shards" in r),
                      key=lambda r: r["shards"])
        ax.plot([r["shards"] for r in mine], [r["value"] for r in mine], marker="o",
                label="memcluster", **_style("memcluster"))
        for r in sweep:
            if r.get("workload") == workload and "shards" not in r:
                ax.axhline(r["value"], label=f"{r['system']} (one process)",
                           **_style(r["system"]))
        ax.set_xscale("log", base=2)
        ax.set_xticks(counts, [str(n) for n in counts])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set(xlabel="shards", ylabel=unit, title=title)
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.savefig(path, dpi=110)
    return True
