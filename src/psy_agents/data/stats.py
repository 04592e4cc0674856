"""Per-split, per-symptom counts: present pairs, absent pairs and located evidence spans."""

from __future__ import annotations

from typing import Any

from psy_agents.data.prepare import PreparedData
from psy_agents.data.splits import SPLITS


def split_stats(data: PreparedData) -> dict[str, dict[str, dict[str, int]]]:
    """``{split: {symptom: {"present": n, "absent": n, "spans": n}}}``."""
    out: dict[str, Any] = {}
    for name in SPLITS:
        table = {s: {"present": 0, "absent": 0, "spans": 0} for s in data.symptoms}
        for pair in data.split(name):
            row = table[pair.symptom]
            row["present" if pair.label else "absent"] += 1
            row["spans"] += len(pair.spans)
        out[name] = table
    return out


def stats_lines(data: PreparedData) -> list[str]:
    """A fixed-width table of :func:`split_stats`, one line per (split, symptom)."""
    stats = split_stats(data)
    lines = [f"split hash {data.split_hash[:12]}  data hash {data.data_hash[:12]}",
             f"{'split':6} {'symptom':18} {'present':>8} {'absent':>8} {'prev%':>6} {'spans':>6}"]
    for name, table in stats.items():
        for symptom, row in table.items():
            total = row["present"] + row["absent"]
            prev = 100 * row["present"] / total if total else 0.0
            lines.append(f"{name:6} {symptom:18} {row['present']:8} {row['absent']:8} "
                         f"{prev:6.1f} {row['spans']:6}")
    return lines
