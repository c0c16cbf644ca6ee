"""Print speed-ups over the NumPy backend from a pytest-benchmark JSON file.

Usage: python benchmarks/ratios.py .benchmarks/.../0001_run.json
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict


def main(path: str) -> None:
    with open(path) as fh:
        runs = json.load(fh)["benchmarks"]
    groups: dict[str, dict[str, float]] = defaultdict(dict)
    for run in runs:
        groups[run["group"]][run["extra_info"]["impl"]] = run["stats"]["median"]
    impls = sorted({i for g in groups.values() for i in g} - {"numpy"})
    print(
        "| op | shape | numpy median (us) | "
        + " | ".join(f"{i} speed-up" for i in impls)
        + " |"
    )
    print("|---" * (3 + len(impls)) + "|")
    for group, times in groups.items():
        op, shape = group.split("|")
        base = times.get("numpy")
        cells = [
            f"{base / times[i]:.2f}x" if base and i in times else "-" for i in impls
        ]
        base_s = f"{base * 1e6:.1f}" if base else "-"
        print(f"| {op} | {shape} | {base_s} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1])
