"""The figures as JSON, as a table, and as a plot; and how they stand against the issue's targets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.stats import fmt

if TYPE_CHECKING:
    from matplotlib.axes import Axes

TARGET_RATIO = 0.8
TARGET_ASSIGN_P50_MS = 60.0
TARGET_HANDOFF_P50_MS = 100.0
TARGET_DEPTH_FACTOR = 1.5


def targets(r: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each target the run measured: the figure, the limit, and whether it was met."""
    out: dict[str, dict[str, Any]] = {}

    def add(name: str, value: float | None, limit: float, at_most: bool, note: str = "") -> None:
        met = value is not None and (value <= limit if at_most else value >= limit)
        out[name] = {"value": value, "limit": f"{'<=' if at_most else '>='} {limit:g}{note}", "met": met}

    if levels := r.get("throughput"):
        peak_product = max(lv["product"]["per_second"] for lv in levels)
        peak_baseline = max(lv["baseline"]["per_second"] for lv in levels)
        add("throughput_ratio", round(peak_product / peak_baseline, 3), TARGET_RATIO, at_most=False,
            note=" (peak against peak)")  # fmt: skip
        light = min(levels, key=lambda lv: lv["concurrency"])
        add("assignment_p50_ms", light["product"]["assign_ms"]["p50"], TARGET_ASSIGN_P50_MS, at_most=True,
            note=f" (x{light['concurrency']})")  # fmt: skip
    if handoff := r.get("handoff_light"):
        add("handoff_p50_ms", handoff["handoff_ms"]["p50"], TARGET_HANDOFF_P50_MS, at_most=True)
    if (depths := r.get("queue_depth")) and len(depths) > 1:
        shallow, deep = depths[0]["handoff"]["handoff_ms"]["p50"], depths[-1]["handoff"]["handoff_ms"]["p50"]
        add("handoff_deep_over_shallow", round(deep / shallow, 2) if shallow else None, TARGET_DEPTH_FACTOR,
            at_most=True, note=f" ({depths[-1]['depth']} vs {depths[0]['depth']} waiting)")  # fmt: skip
    return out


def _stem(r: dict[str, Any]) -> str:
    return f"{r.get('label', 'run')}-{r.get('started_at', 'unknown').replace(':', '').replace('-', '')[:15]}"


def write_json(r: dict[str, Any], directory: Path, suffix: str = "") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{_stem(r)}{suffix}.json"
    path.write_text(json.dumps(r, indent=2, default=str) + "\n")
    return path


def write(r: dict[str, Any], directory: Path) -> list[Path]:
    """`<label>-<time>.json` and `.png` in `directory`."""
    json_path = write_json(r, directory)
    png_path = directory / f"{_stem(r)}.png"
    plot(r, png_path)
    return [json_path, png_path]


def _row(cells: list[str], widths: list[int]) -> str:
    return "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True)))


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(x) for x in col) for col in zip(header, *rows, strict=True)]
    lines = [_row(header, widths), _row(["-" * w for w in widths], widths)]
    lines += [_row(row, widths) for row in rows]
    return "\n".join(lines)


def _pcts(s: dict[str, Any]) -> str:
    return f"{fmt(s['p50'])} / {fmt(s['p95'])} / {fmt(s['p99'])}"


def table(r: dict[str, Any]) -> str:
    """The run as plain-text tables (what `make bench` prints, and what docs/performance.md quotes)."""
    m = r["machine"]
    out = [
        f"Returns desk benchmark {r['started_at']} ({r['label']}, commit {r['git']['commit']}"
        f"{' + local changes' if r['git']['changed_files'] else ''}, {r.get('wall_seconds', 0):g} s)",
        f"{m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB; load average {r['load_average']['start']} -> "
        f"{r['load_average'].get('end')}; think time {r['options']['think_ms']:g} ms",
    ]
    if levels := r.get("throughput"):
        out += [
            "",
            "Throughput and latency against load (closed loop: file -> think -> resolve; baseline: start -> think "
            "-> signal -> done)",
            _table(
                [
                    "concurrent",
                    "product/s",
                    "baseline/s",
                    "ratio",
                    "assign p50/p95/p99 ms",
                    "resolve p50 ms",
                    "lifecycle p50 ms",
                    "baseline lifecycle p50 ms",
                ],
                [
                    [
                        str(lv["concurrency"]),
                        fmt(lv["product"]["per_second"], 1),
                        fmt(lv["baseline"]["per_second"], 1),
                        fmt(lv["ratio"], 2),
                        _pcts(lv["product"]["assign_ms"]),
                        fmt(lv["product"]["resolve_ms"]["p50"]),
                        fmt(lv["product"]["lifecycle_ms"]["p50"]),
                        fmt(lv["baseline"]["lifecycle_ms"]["p50"]),
                    ]
                    for lv in levels
                ],
            ),  # fmt: skip
            "",
            "CPU per lifecycle, ms (from /proc, over each measuring window)",
        ]
        names = [n for n in ("temporal", "worker", "bare-worker", "api", "mariadb", "driver")
                 if n in levels[0]["product"]["cpu_ms_per_lifecycle"]]  # fmt: skip
        rows = []
        for lv in levels:
            for system in ("baseline", "product"):
                cpu = lv[system]["cpu_ms_per_lifecycle"]
                rows.append([f"x{lv['concurrency']} {system}", *(fmt(cpu.get(n), 1) for n in names),
                             fmt(sum(cpu.get(n, 0) for n in names if n != "driver"), 1),
                             fmt(lv[system]["cpu_seconds"].get("outside", 0) / lv[system]["seconds"], 2)])  # fmt: skip
        out.append(_table(["run", *names, "total", "others' load (cores)"], rows))
    rows = []
    if light := r.get("handoff_light"):
        rows.append(["light (1 agent)", str(light["count"]), _pcts(light["handoff_ms"]),
                     _pcts(light["after_answer_ms"]), fmt(light["in_transaction_dispatch_ms"]["p50"], 1),
                     "-", "-", "-",
                     fmt(light.get("others_load_cores"), 2)])  # fmt: skip
    for d in r.get("queue_depth", []):
        h = d["handoff"]
        rows.append(
            [
                f"{d['depth']} waiting",
                str(h["count"]),
                _pcts(h["handoff_ms"]),
                _pcts(h["after_answer_ms"]),
                fmt(h["in_transaction_dispatch_ms"]["p50"], 1),
                f"{fmt(d['dispatch_probe_ms']['p50'], 2)} / {fmt(d['dispatch_probe_ms']['p95'], 2)}",
                str(d["dispatch_rows_read"]),
                fmt(d["fill_per_second"], 0),
                fmt(h.get("others_load_cores"), 2),
            ]
        )
    if rows:
        out += [
            "",
            "Hand-off (resolved_at -> next case assigned_at, from the database; one resolve at a time)",
            _table(
                [
                    "queue",
                    "n",
                    "hand-off p50/p95/p99 ms",
                    "after answer p50/p95/p99 ms",
                    "reserve p50 ms",
                    "dispatch p50/p95 ms",
                    "rows read",
                    "filed/s",
                    "others' load",
                ],
                rows,
            ),  # fmt: skip
        ]
    if mem := r.get("memory_loaded"):
        idle = r["memory_idle_mib"]
        out += [
            "",
            f"Memory (RSS MiB) idle -> with {mem['open_cases']} open cases "
            f"({mem['running_case_workflows']} running case workflows): "
            + ", ".join(f"{k} {fmt(idle.get(k))} -> {fmt(v)}" for k, v in mem["rss_mib"].items()),
        ]
    out += ["", "Targets"]
    for name, t in r["targets"].items():
        out.append(f"  {'MET   ' if t['met'] else 'MISSED'} {name}: {t['value']} (target {t['limit']})")
    c = r["correctness"]
    out += [
        "",
        f"Correctness: holding violations {len(c['holding_violations'])}, FIFO violations {c['fifo_violations']}, "
        f"reservations left unconfirmed {c['reservations_left_unconfirmed']}, "
        f"filings retried after a 503 {c['filings_retried_after_503']}, cases {c['cases_by_status']}",
    ]
    return "\n".join(out)


def plot(r: dict[str, Any], path: Path) -> None:
    """Four panels: throughput and latency against load; hand-off and dispatch against queue depth."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(13, 9), constrained_layout=True)
    (a, b), (c, d) = axes
    if r.get("throughput"):
        _plot_load(r, a, b)
    if r.get("queue_depth"):
        _plot_depth(r, c, d)
    for ax in (a, b, c, d):
        if not ax.has_data():
            ax.text(0.5, 0.5, "not run", ha="center", va="center", transform=ax.transAxes)
    m = r["machine"]
    fig.suptitle(
        f"Returns desk vs bare Temporal: {m['cores']} cores ({m['cpu']}), {m['memory_gib']} GiB, "
        f"{r['started_at'][:10]}, commit {r['git']['commit']} ({r['label']})",
        fontsize=11,
    )
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_load(r: dict[str, Any], a: Axes, b: Axes) -> None:
    levels = r["throughput"]
    conc = [lv["concurrency"] for lv in levels]

    a.plot(conc, [lv["product"]["per_second"] for lv in levels], "o-", label="returns desk (HTTP + MariaDB)")
    a.plot(conc, [lv["baseline"]["per_second"] for lv in levels], "s--", label="bare Temporal workflow")
    for x, lv in zip(conc, levels, strict=True):
        a.annotate(f"x{lv['ratio']:.2f}", (x, lv["product"]["per_second"]), textcoords="offset points",
                   xytext=(0, 8), ha="center", fontsize=8)  # fmt: skip
    a.set(xscale="log", xlabel="concurrent lifecycles (closed loop)", ylabel="lifecycles / s",
          title="Throughput against load (label: ratio to baseline)")  # fmt: skip
    a.set_xticks(conc, [str(x) for x in conc])
    a.set_ylim(bottom=0)
    a.legend()

    b.plot(conc, [lv["product"]["assign_ms"]["p50"] for lv in levels], "o-", label="assignment p50 (POST /cases)")
    b.plot(conc, [lv["product"]["assign_ms"]["p95"] for lv in levels], "o:", label="assignment p95")
    b.plot(conc, [lv["product"]["resolve_ms"]["p50"] for lv in levels], "^-", label="resolve p50 (POST /resolve)")
    b.plot(conc, [lv["baseline"]["assign_ms"]["p50"] for lv in levels], "s--", label="baseline start RPC p50")
    b.plot(conc, [lv["baseline"]["resolve_ms"]["p50"] for lv in levels], "v--", label="baseline signal->done p50")
    b.axhline(TARGET_ASSIGN_P50_MS, color="grey", lw=0.8, ls="-.", label=f"assignment target {TARGET_ASSIGN_P50_MS:g}")
    b.set(xscale="log", yscale="log", xlabel="concurrent lifecycles (closed loop)", ylabel="ms",
          title="Latency against load")  # fmt: skip
    b.set_xticks(conc, [str(x) for x in conc])
    b.legend(fontsize=8)


def _plot_depth(r: dict[str, Any], c: Axes, d: Axes) -> None:
    depths = r["queue_depth"]
    xs = [row["depth"] for row in depths]
    for key, style in (("p50", "o-"), ("p95", "o:"), ("p99", "o--")):
        c.plot(xs, [row["handoff"]["handoff_ms"][key] for row in depths], style, label=f"hand-off {key}")
    if light := r.get("handoff_light"):
        c.axhline(light["handoff_ms"]["p50"], color="black", lw=0.8, ls="-.",
                  label=f"hand-off p50, light load ({light['handoff_ms']['p50']:g} ms)")  # fmt: skip
    c.axhline(depths[0]["handoff"]["handoff_ms"]["p50"] * TARGET_DEPTH_FACTOR, color="grey", lw=0.8, ls="-.",
              label=f"{TARGET_DEPTH_FACTOR}x p50 at {xs[0]} waiting (target)")  # fmt: skip
    c.set_xscale("log")
    c.set_xticks(xs, [f"{x:,}" for x in xs])
    c.set( xlabel=f"cases waiting ({r['options']['depth_agents']} busy agents)", ylabel="ms",
          title="Hand-off latency (resolved -> next assigned) against queue depth")  # fmt: skip
    c.set_ylim(bottom=0)
    c.legend(fontsize=8)

    d.plot(xs, [row["dispatch_probe_ms"]["p50"] for row in depths], "o-", label="dispatch() p50 (direct, one agent)")
    d.plot(xs, [row["dispatch_probe_ms"]["p95"] for row in depths], "o:", label="dispatch() p95")
    d.plot(xs, [row["handoff"]["in_transaction_dispatch_ms"]["p50"] for row in depths], "^-",
           label="resolved -> reserved p50 (live, in the resolve transaction)")  # fmt: skip
    d.set_xscale("log")
    d.set_xticks(xs, [f"{x:,}" for x in xs])
    d.set(xlabel="cases waiting", ylabel="ms", title="Dispatch time against queue depth")
    d.set_ylim(bottom=0)
    rows_axis = d.twinx()
    rows_axis.plot(xs, [row["dispatch_rows_read"] for row in depths], "x--", color="grey", label="rows read")
    rows_axis.set_ylabel("rows read by dispatch()")
    rows_axis.set_ylim(bottom=0, top=max(10, max(row["dispatch_rows_read"] for row in depths) * 2))
    lines, labels = d.get_legend_handles_labels()
    more, more_labels = rows_axis.get_legend_handles_labels()
    d.legend(lines + more, labels + more_labels, fontsize=8, loc="upper left")
