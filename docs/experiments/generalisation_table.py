"""The generalisation table (issue 16) from `vla3d eval` JSONs: one row per suite, pooled success
with its Wilson 95 % interval, and the gap to nominal the issue's targets are stated in. JSONs of
the same suite from several run seeds (e.g. SEED=0 and SEED=1 of 15_generalisation_eval.sh) are
pooled into one row: a choice made on one run seed's 50 episodes disagreed with the test split.

Usage: python docs/experiments/generalisation_table.py RESULT.json [RESULT.json ...]
"""
from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

from vla3d_ros.evaluate.stats import wilson_interval

# The targets: nominal >= 85 %; the others >= nominal - 10 points; robot_init >= 60 %.
ORDER = ("nominal", "viewpoint", "appearance", "language", "robot_init")


def main(paths: list[str]) -> int:
    results: dict[str, list[dict]] = defaultdict(list)
    for path in paths:
        data = json.loads(Path(path).read_text())
        results[data["suite"]].append(data)
    if not results:
        print("no results", file=sys.stderr)
        return 1
    checkpoints = sorted({d["checkpoint"] for runs in results.values() for d in runs})
    splits = sorted({d.get("split", "val") for runs in results.values() for d in runs})
    seeds = sorted({d["run_seed"] for runs in results.values() for d in runs})
    if len(checkpoints) > 1 or len(splits) > 1:
        print(f"refusing to pool different checkpoints {checkpoints} or splits {splits}", file=sys.stderr)
        return 1
    pooled = {suite: (sum(d["overall"]["successes"] for d in runs), sum(d["overall"]["trials"] for d in runs))
              for suite, runs in results.items()}
    nominal = pooled["nominal"][0] / pooled["nominal"][1] if "nominal" in pooled else None
    print(f"checkpoint `{checkpoints[0]}`, split **{splits[0]}**, run seed(s) {', '.join(map(str, seeds))}")
    print()
    print("| suite | success | 95 % CI | episodes | vs nominal |")
    print("|---|---|---|---|---|")
    for suite in sorted(pooled, key=lambda s: ORDER.index(s) if s in ORDER else len(ORDER)):
        successes, trials = pooled[suite]
        rate = successes / trials
        low, high = wilson_interval(successes, trials)
        gap = "" if nominal is None or suite == "nominal" else f"{100 * (rate - nominal):+.0f}"
        print(f"| {suite} | {100 * rate:.0f} % | {100 * low:.1f}-{100 * high:.1f} | {successes}/{trials} | {gap} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
