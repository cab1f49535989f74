"""The generalisation table (issue 16) from `vla3d eval` JSONs: per task, one row per suite, pooled
success with its Wilson 95 % interval, and the gap to that task's nominal the issue's targets are
stated in. JSONs of the same suite from several run seeds (e.g. SEED=0 and SEED=1 of
15_generalisation_eval.sh) are pooled into one row: a choice made on one run seed's 50 episodes
disagreed with the test split. A JSON of several tasks (`vla3d eval --tasks A B`) adds to each
task's table.

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
    runs = [json.loads(Path(path).read_text()) for path in paths]
    if not runs:
        print("no results", file=sys.stderr)
        return 1
    checkpoints = sorted({d["checkpoint"] for d in runs})
    splits = sorted({d.get("split", "val") for d in runs})
    seeds = sorted({d["run_seed"] for d in runs})
    if len(checkpoints) > 1 or len(splits) > 1:
        print(f"refusing to pool different checkpoints {checkpoints} or splits {splits}", file=sys.stderr)
        return 1
    # task -> suite -> [successes, trials]
    pooled: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    for run in runs:
        for task, rate in run["per_task"].items():
            pooled[task][run["suite"]][0] += rate["successes"]
            pooled[task][run["suite"]][1] += rate["trials"]
    print(f"checkpoint `{checkpoints[0]}`, split **{splits[0]}**, run seed(s) {', '.join(map(str, seeds))}")
    for task in sorted(pooled):
        print()
        print(f"| {task} | success | 95 % CI | episodes | vs nominal |")
        print("|---|---|---|---|---|")
        suites = pooled[task]
        nominal = suites["nominal"][0] / suites["nominal"][1] if "nominal" in suites else None
        for suite in sorted(suites, key=lambda s: ORDER.index(s) if s in ORDER else len(ORDER)):
            successes, trials = suites[suite]
            rate = successes / trials
            low, high = wilson_interval(successes, trials)
            gap = "" if nominal is None or suite == "nominal" else f"{100 * (rate - nominal):+.0f}"
            print(f"| {suite} | {100 * rate:.0f} % | {100 * low:.1f}-{100 * high:.1f} | {successes}/{trials} | {gap} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
