"""The generalisation table (issue 16) from `vla3d eval` JSONs: one row per suite JSON, pooled
success with its Wilson 95 % interval, and the gap to nominal the issue's targets are stated in.

Usage: python docs/experiments/generalisation_table.py RESULT.json [RESULT.json ...]
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

# The targets: nominal >= 85 %; the others >= nominal - 10 points; robot_init >= 60 %.
ORDER = ("nominal", "viewpoint", "appearance", "language", "robot_init")


def main(paths: list[str]) -> int:
    results = {}
    for path in paths:
        data = json.loads(Path(path).read_text())
        results[data["suite"]] = data
    if not results:
        print("no results", file=sys.stderr)
        return 1
    nominal = results.get("nominal", {}).get("overall", {}).get("rate")
    any_result = next(iter(results.values()))
    print(f"checkpoint `{any_result['checkpoint']}`, split **{any_result.get('split', 'val')}**, "
          f"run seed {any_result['run_seed']}")
    print()
    print("| suite | success | 95 % CI | episodes | vs nominal |")
    print("|---|---|---|---|---|")
    for suite in sorted(results, key=lambda s: ORDER.index(s) if s in ORDER else len(ORDER)):
        overall = results[suite]["overall"]
        gap = "" if nominal is None or suite == "nominal" else f"{100 * (overall['rate'] - nominal):+.0f}"
        print(f"| {suite} | {100 * overall['rate']:.0f} % | {100 * overall['ci95_low']:.1f}-"
              f"{100 * overall['ci95_high']:.1f} | {overall['successes']}/{overall['trials']} | {gap} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
