"""What a run leaves behind: a summary table on the terminal, results JSON, a PNG report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .stats import STAGE_HELP, STAGES, Recorder, distribution_ms


def signin_table(result: dict[str, Any], title: str) -> str:
    lines = [title]
    lo, hi = result["offered_rate"]
    rate = f"{lo:g}/s" if lo == hi else f"{lo:g}->{hi:g}/s"
    lines.append(
        f"offered {rate} for {result['duration_s']:g}s (+{result['warmup_s']:g}s warm-up), "
        f"{result['devices']} devices in {result['workers']} workers"
    )
    lines.append(
        f"completed {result['completed']} of {result['started']} started, "
        f"{result['throughput_per_s']:g} sign-ins/s, errors: {result['errors'] or 'none'}"
    )
    lines.append(
        f"{'stage (ms from intended start)':<34}{'p50':>9}{'p90':>9}{'p99':>9}{'p99.9':>9}{'max':>9}"
    )
    for stage in STAGES:
        s = result["latency_ms"][stage]
        cells = "".join(f"{s.get(k, float('nan')):>9.3f}" for k in ("p50", "p90", "p99", "p99.9", "max"))
        lines.append(f"{stage:<34}{cells}")
    lag = result.get("generator_start_lag_ms", {})
    if lag.get("count"):
        lines.append(f"generator start lag (late sends): p50 {lag['p50']:.3f} ms, p99 {lag['p99']:.3f} ms")
    if result.get("brokers"):
        brokers = result["brokers"]
        cores = ", ".join(f"{b['cpu_share_of_one_core']:.2f}" for b in brokers)
        if len(brokers) > 1:  # several nodes, or a `serve --workers` supervisor and its workers
            cores += f"; PIDs {', '.join(str(b.get('pid')) for b in brokers)}"
        per = result.get("broker_cpu_ms_per_signin")
        rss = ", ".join(str(b["rss_mib"]) for b in brokers)
        said = (
            f"broker CPU {per:.3f} ms per sign-in" if per is not None else "broker CPU: no sign-in completed"
        )
        lines.append(f"{said} (cores busy: {cores}); RSS {rss} MiB")
    elif "brokers" not in result and "generator_cpu_ms_per_signin" in result:
        lines.append("broker CPU not measured (give --broker-pid)")
    extra = [
        f"{name} {result[key]:.3f}"
        for name, key in (("Redis", "redis_cpu_ms_per_signin"), ("generator", "generator_cpu_ms_per_signin"))
        if result.get(key) is not None
    ]
    if "redis_cpu_ms_per_signin" in result and result["redis_cpu_ms_per_signin"] is None:
        extra.append("Redis not measured (a Redis the tester did not start)")
    if extra:
        lines.append(f"CPU ms per sign-in of the others: {', '.join(extra)}")
    return "\n".join(lines)


HELD = " (held socket)"


def idle_table(result: dict[str, Any]) -> str:
    r = result["restart"]
    lines = [
        f"idle devices: {result['devices']} in {result['workers']} workers",
        f"first connect of all: {result['first_connect_s']:.2f}s",
        f"broker RSS empty {result['broker_rss_empty_mib']} MiB, connected "
        f"{result['broker_rss_connected_mib']} MiB: {result['broker_kib_per_device']:.2f} KiB per device",
        f"restart{HELD if result.get('held_socket') else ''}: old broker exited after "
        f"{r['old_broker_exit_s']:.2f}s, new one ready "
        f"{r['broker_down_to_ready_s']:.2f}s after the stop; all back "
        f"{r['all_back_after_stop_s']:.2f}s after the stop began "
        f"({r['all_back_after_ready_s']:.2f}s after the new broker was ready)",
    ]
    if "generator_cpu_s" in r:
        first = (
            result["broker_cpu_s_first_connect"],
            result["generator_cpu_s_first_connect"],
            result["redis_cpu_s_first_connect"],
        )
        again = (r["new_broker_cpu_s"], r["generator_cpu_s"], r["redis_cpu_s"])
        cpu = ", ".join(f"{x:.2f}" for x in first)
        lines.append(f"CPU s (broker, load generator, Redis): first connect {cpu}")
        cpu = ", ".join(f"{x:.2f}" for x in again)
        lines.append(f"  restart to all back (the new broker since its start) {cpu}")
    return "\n".join(lines)


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(_public(data), indent=2, sort_keys=False) + "\n")


def _public(data: Any) -> Any:
    """Drop the in-memory recorders (keys starting with '_') before writing JSON."""
    if isinstance(data, dict):
        return {k: _public(v) for k, v in data.items() if not str(k).startswith("_")}
    if isinstance(data, list):
        return [_public(v) for v in data]
    return data


def write_png(path: Path, runs: list[tuple[str, Recorder]], title: str) -> None:
    """Percentiles of end-to-end latency over time, and each stage's latency distribution."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a server
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(runs), 2, figsize=(13, 4.2 * len(runs)), squeeze=False)
    for row, (label, rec) in enumerate(runs):
        ax = axes[row][0]
        seconds = sorted(rec.per_second)
        for pct, style in ((50, "-"), (90, "--"), (99, "-."), (100, ":")):
            values = [rec.per_second[s].get_value_at_percentile(pct) / 1000 for s in seconds]
            name = "max" if pct == 100 else f"p{pct}"
            ax.plot(seconds, values, style, label=name)
        ax.set_yscale("log")
        ax.set_xlabel("second of the measured run")
        ax.set_ylabel("end-to-end latency (ms)")
        ax.set_title(f"{label}: end-to-end latency per second")
        ax.grid(True, which="both", alpha=0.3)
        ax2 = ax.twinx()
        ax2.bar(seconds, [rec.per_second[s].get_total_count() for s in seconds], alpha=0.12, color="grey")
        ax2.set_ylabel("completed sign-ins per second")
        ax.legend(loc="upper left")

        ax = axes[row][1]
        for stage in STAGES:
            points = distribution_ms(rec.stages[stage])
            if not points:
                continue
            xs = [1 / max(1 - p / 100, 1e-6) for p, _ in points]
            ax.plot(xs, [v for _, v in points], label=f"{stage}: {STAGE_HELP[stage]}")
        ax.set_xscale("log")
        ax.set_xticks([1, 2, 10, 100, 1000, 10000])
        ax.set_xticklabels(["0%", "50%", "90%", "99%", "99.9%", "99.99%"])
        ax.set_xlabel("percentile")
        ax.set_yscale("log")
        ax.set_ylabel("ms from intended start")
        ax.set_title(f"{label}: latency distribution by stage")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
