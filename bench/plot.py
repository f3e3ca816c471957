"""Pictures of the benchmarks' JSON results (PNG).

    python bench/plot.py RESULT [RESULT ...] [-o DIR] [--name NAME]

A RESULT is a JSON file holding what a bench script printed on its last line (bench/runtime.py,
bench/workspace.py, bench/inference.py, ...), or a Markdown file whose fenced ``json`` blocks hold
such results (docs/performance.md). Each figure is written only when its data is there:

  NAME-ratios.png         every list of per-round ratios (keys ending in ``per_round``, e.g.
                          ``ratio_per_round``, ``comparisons.kcm_default.ratio_seconds_per_round``):
                          one row per list, a dot per round and a bar at the median of them
                          (which can differ from a headline ratio of medians)
  NAME-latency-cdf.png    the empirical CDF of every list of latency samples
                          (``latencies_ms`` from bench/runtime.py; ``ready_s``, each Workspace's
                          create -> ready, per side and kcm mode from bench/workspace.py)
  NAME-scaling.png        seconds until all Workspaces are ready against their number, per side,
                          when the results hold more than one Workspace count (e.g. a full-mode
                          run at 100 and a --kaito-only run at 1,000)

It needs matplotlib, which only the ``bench`` extra installs: ``pip install 'kaito[bench]'``.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

EXTRA_HINT = "bench/plot.py needs matplotlib, which the bench extra installs: pip install 'kaito[bench]'"

#: A series: its label and its numbers.
Series = tuple[str, list[float]]

_JSON_BLOCK = re.compile(r"```json\n(.*?)\n```", re.S)


class MissingMatplotlib(RuntimeError):
    """matplotlib is not installed; the message names the extra that installs it."""


# ----- reading results


def load(path: Path) -> list[dict[str, Any]]:
    """The result objects in a JSON file, or in a Markdown file's ``json`` blocks."""
    text = path.read_text()
    if path.suffix == ".md":
        return [obj for block in _JSON_BLOCK.findall(text) if isinstance(obj := json.loads(block), dict)]
    lines = [ln for ln in text.splitlines() if ln.strip()]
    try:
        obj = json.loads(text)
    except json.JSONDecodeError:
        obj = json.loads(lines[-1])  # a whole stdout capture: the result is the last line
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected one JSON object, got {type(obj).__name__}")
    return [obj]


def _numbers(value: Any) -> list[float] | None:
    if isinstance(value, list) and value and all(isinstance(x, int | float) for x in value):
        return [float(x) for x in value]
    return None


def _walk(obj: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Every (path, value) below ``obj``, through dicts and lists of dicts (index as "0", "1", ...)."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield (*path, str(key)), value
            yield from _walk(value, (*path, str(key)))
    elif isinstance(obj, list):
        for i, item in enumerate(obj):
            if isinstance(item, dict):
                yield from _walk(item, (*path, str(i)))


def ratio_series(result: dict[str, Any]) -> list[Series]:
    """Every numeric list under a key ending in ``per_round``, labelled by its dotted path."""
    out: list[Series] = []
    for path, value in _walk(result):
        nums = _numbers(value)
        if nums is not None and path[-1].endswith("per_round") and "rounds" not in path:
            out.append((".".join(p for p in path if p != "comparisons"), nums))
    return out


def latency_series(result: dict[str, Any]) -> list[tuple[str, list[float], str]]:
    """(label, samples, unit) for every list of latency samples in a result.

    ``latencies_ms`` lists are taken as they are; ``ready_s`` lists of one side's rounds
    (``comparisons.MODE.rounds.SIDE[i].ready_s``) are pooled into one series per mode and side."""
    out: list[tuple[str, list[float], str]] = []
    pooled: dict[str, list[float]] = {}
    for path, value in _walk(result):
        nums = _numbers(value)
        if nums is None:
            continue
        if path[-1] == "latencies_ms":
            out.append((".".join(path[:-1]) or "latency", nums, "ms"))
        elif path[-1] == "ready_s":
            parent = path[:-1]
            kept = (p for p in parent if p not in ("comparisons", "rounds", "runs") and not p.isdigit())
            label = ".".join(kept) or "ready"
            pooled.setdefault(label, []).extend(nums)
    out.extend((label, sorted(nums), "s") for label, nums in pooled.items())
    return out


def _round_ready(result: dict[str, Any]) -> Iterator[tuple[str, int, float]]:
    """(side, workspaces, seconds to all ready) from one bench/workspace.py result: full mode
    (``comparisons``), ``--kaito-only`` (``runs`` per kcm mode) or ``--small`` (one side)."""
    runs = result.get("runs")
    if isinstance(runs, dict):
        for mode, run in runs.items():
            if isinstance(run, dict):
                for side, n, seconds in _round_ready(run):
                    yield f"{side} ({mode})", n, seconds
        return
    comparisons = result.get("comparisons")
    if isinstance(comparisons, dict):
        n = result.get("workspaces")
        for mode, comp in comparisons.items():
            for side in ("kaito", "upstream"):
                seconds = (comp.get(side) or {}).get("seconds_to_all_ready")
                if isinstance(n, int) and isinstance(seconds, int | float):
                    yield f"{side} ({mode})", n, float(seconds)
    elif isinstance(result.get("side"), str) and isinstance(result.get("workspaces"), int):
        seconds = result.get("seconds_to_all_ready")
        if isinstance(seconds, int | float):
            yield str(result["side"]), int(result["workspaces"]), float(seconds)


def scaling_points(results: list[dict[str, Any]]) -> dict[str, list[tuple[int, float]]]:
    """Per side, (Workspaces, seconds to all ready) sorted by count; only sides measured at more
    than one count (one point is no scaling curve)."""
    points: dict[str, dict[int, list[float]]] = {}
    for result in results:
        for side, n, seconds in _round_ready(result):
            points.setdefault(side, {}).setdefault(n, []).append(seconds)
    return {
        side: sorted((n, statistics.median(v)) for n, v in by_n.items())
        for side, by_n in points.items()
        if len(by_n) > 1
    }


# ----- drawing


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError as exc:
        raise MissingMatplotlib(EXTRA_HINT) from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    # no Software/date metadata: the same data gives the same bytes
    fig.savefig(path, dpi=100, metadata={"Software": None})
    fig.clear()
    return path


def plot_ratios(series: list[Series], path: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 0.55 * len(series) + 1.4))
    for row, (_label, values) in enumerate(series):
        ax.scatter(values, [row] * len(values), s=22, color="tab:blue", zorder=3)
        median = statistics.median(values)
        ax.plot([median, median], [row - 0.3, row + 0.3], color="tab:red", linewidth=2.5, zorder=4)
        ax.annotate(f"{median:.2f}", (median, row + 0.32), ha="center", fontsize=8, color="tab:red")
    ax.axvline(1.0, color="grey", linestyle=":", linewidth=1)
    ax.set_yticks(range(len(series)), [label for label, _ in series], fontsize=8)
    ax.set_ylim(-0.6, len(series) - 0.3)
    ax.set_xlabel("ratio in each round (dots) and their median (red bar); 1 = parity")
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


def plot_latency_cdf(series: list[tuple[str, list[float], str]], path: Path) -> Path:
    plt = _pyplot()
    units = sorted({unit for _, _, unit in series})
    fig, axes = plt.subplots(1, len(units), figsize=(6.5 * len(units), 3.8), squeeze=False)
    for ax, unit in zip(axes[0], units, strict=True):
        for label, samples, u in series:
            if u != unit:
                continue
            xs = sorted(samples)
            ys = [(i + 1) / len(xs) for i in range(len(xs))]
            ax.step(xs, ys, where="post", label=f"{label} (n={len(xs)})")
        ax.set_xlabel(f"latency ({unit})")
        ax.set_ylabel("fraction of samples ≤ x")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    return _save(fig, path)


def plot_scaling(points: dict[str, list[tuple[int, float]]], path: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for side, pts in sorted(points.items()):
        ax.plot([n for n, _ in pts], [s for _, s in pts], marker="o", label=side)
    ax.set_xscale("log")
    ax.set_xlabel("Workspaces created at once")
    ax.set_ylabel("seconds until all ready")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot(results: list[dict[str, Any]], outdir: Path, name: str) -> list[Path]:
    """Every figure the results have data for, as ``outdir/name-*.png``; the paths written."""
    outdir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    ratios = [s for r in results for s in ratio_series(r)]
    if ratios:
        written.append(plot_ratios(ratios, outdir / f"{name}-ratios.png"))
    latencies = [s for r in results for s in latency_series(r)]
    if latencies:
        written.append(plot_latency_cdf(latencies, outdir / f"{name}-latency-cdf.png"))
    scaling = scaling_points(results)
    if scaling:
        written.append(plot_scaling(scaling, outdir / f"{name}-scaling.png"))
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("results", nargs="+", type=Path, help="JSON results, or Markdown with json blocks")
    parser.add_argument("-o", "--outdir", type=Path, default=Path("."), help="where the PNGs go")
    parser.add_argument("--name", default=None, help="file name prefix (default: the first input's stem)")
    args = parser.parse_args(argv)
    results = [obj for path in args.results for obj in load(path)]
    try:
        written = plot(results, args.outdir, args.name or args.results[0].stem)
    except MissingMatplotlib as exc:
        print(exc, file=sys.stderr)
        return 2
    if not written:
        print("no per-round ratios, latency samples or Workspace counts in the input", file=sys.stderr)
        return 1
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
