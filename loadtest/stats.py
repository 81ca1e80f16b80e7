"""Latency recording with HdrHistogram, and merging the recordings of many processes.

Values are microseconds. Each worker keeps one histogram per stage plus one
end-to-end histogram per second of the run (for the percentiles-over-time plot),
and ships them to the parent as HdrHistogram's compact encoding.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from hdrh.histogram import HdrHistogram

# Milestones of one sign-in, each measured from its intended start:
STAGES = ("create", "deliver", "answer", "result")
# How late the generator itself started each sign-in (0 when on time): a large value
# means the generator, not the broker, is the bottleneck of that run.
LAG = "start_lag"
STAGE_HELP = {
    "create": "POST /v1/challenges answered (RP holds id and number)",
    "deliver": "challenge frame received by the device",
    "answer": "answer_result received by the device (answer recorded)",
    "result": "RP holds the verified result (end to end)",
}
LOWEST_US, HIGHEST_US = 1, 120_000_000  # 1 us .. 2 min: anything slower is a timeout
SIG_FIGS = 3


def new_histogram() -> HdrHistogram:
    return HdrHistogram(LOWEST_US, HIGHEST_US, SIG_FIGS)


@dataclass
class Recorder:
    stages: dict[str, HdrHistogram] = field(
        default_factory=lambda: {s: new_histogram() for s in (*STAGES, LAG)}
    )
    per_second: dict[int, HdrHistogram] = field(default_factory=dict)
    errors: Counter[str] = field(default_factory=Counter)
    started: int = 0
    completed: int = 0

    def record(self, stage: str, seconds: float) -> None:
        self.stages[stage].record_value(_us(seconds))

    def record_result(self, second: int, seconds: float) -> None:
        self.record("result", seconds)
        hist = self.per_second.get(second)
        if hist is None:
            hist = self.per_second[second] = new_histogram()
        hist.record_value(_us(seconds))
        self.completed += 1

    def error(self, kind: str) -> None:
        self.errors[kind] += 1

    def to_wire(self) -> dict[str, Any]:
        return {
            "stages": {k: h.encode() for k, h in self.stages.items()},
            "per_second": {k: h.encode() for k, h in self.per_second.items()},
            "errors": dict(self.errors),
            "started": self.started,
            "completed": self.completed,
        }

    def merge_wire(self, wire: dict[str, Any]) -> None:
        for k, enc in wire["stages"].items():
            self.stages[k].add(HdrHistogram.decode(enc))
        for sec, enc in wire["per_second"].items():
            hist = self.per_second.get(sec)
            if hist is None:
                hist = self.per_second[sec] = new_histogram()
            hist.add(HdrHistogram.decode(enc))
        self.errors.update(wire["errors"])
        self.started += wire["started"]
        self.completed += wire["completed"]


def _us(seconds: float) -> int:
    return min(max(LOWEST_US, round(seconds * 1e6)), HIGHEST_US)


PERCENTILES = (50.0, 90.0, 99.0, 99.9, 100.0)


def summary_ms(hist: HdrHistogram) -> dict[str, float]:
    """count, mean and percentiles in milliseconds (p100 is the max)."""
    out: dict[str, float] = {"count": hist.get_total_count()}
    if not hist.get_total_count():
        return out
    out["mean"] = round(hist.get_mean_value() / 1000, 3)
    for p in PERCENTILES:
        key = "max" if p == 100.0 else f"p{p:g}"
        value = hist.get_max_value() if p == 100.0 else hist.get_value_at_percentile(p)
        out[key] = round(value / 1000, 3)
    return out


def distribution_ms(hist: HdrHistogram) -> list[tuple[float, float]]:
    """(percentile, latency ms) points of the whole distribution, for the plot."""
    points = []
    for item in hist.get_percentile_iterator(5):
        points.append((item.percentile_level_iterated_to, item.value_iterated_to / 1000))
    return points
