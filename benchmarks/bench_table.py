"""One table from several bench.py reports: model x budget x weight storage x mode x strategy x N.

    python benchmarks/bench_table.py benchmarks/gpu-table/*.json
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def rows(report: dict):
    for run in report["runs"]:
        yield {"model": report["config"], "budget": report["budget"], "storage": report.get("weight_storage", "compute"),
               "strategy": run["strategy"], "n": run["n"], "seconds": run["wall_s"],
               "peak_gib": run["peak_bytes"] / 2 ** 30, "vs_bon": run.get("time_vs_bon"),
               "vs_prediction": run.get("time_over_pass_prediction"), "memory_vs_bon": run.get("memory_vs_bon")}


def fmt(value, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def table(paths: list[str]) -> str:
    head = ["model", "budget", "storage", "strategy", "N", "time s", "peak GiB", "time / BoN", "/ token-pass pred.",
            "memory / BoN"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for path in paths:
        for r in rows(json.loads(Path(path).read_text())):
            lines.append(f"| {r['model']} | {r['budget']} | {r['storage']} | {r['strategy']} | {r['n']} | "
                         f"{r['seconds']:.2f} | {r['peak_gib']:.2f} | {fmt(r['vs_bon'], '.2f')} | "
                         f"{fmt(r['vs_prediction'], '.2f')} | {fmt(r['memory_vs_bon'], '.2f')} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table(sys.argv[1:]))
