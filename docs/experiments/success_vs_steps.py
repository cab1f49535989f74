"""Success against training steps, per arm, from `vla3d eval` JSONs labelled ARM@STEPS.

Experiment 13 (`13_spatial_forcing_steps.sh`) evaluates both arms (with and without Spatial
Forcing) at the same steps on the same episodes; this writes the table (rate, Wilson 95 % interval,
counts), the steps each arm needed to first reach each threshold, and the plot.

Usage: python docs/experiments/success_vs_steps.py EVAL.json [...] --markdown OUT.md --plot OUT.png
       [--thresholds 0.5 0.7]
"""
from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path


def load_curves(paths: list[Path]) -> dict[str, list[tuple[int, dict]]]:
    """arm -> [(steps, overall)] sorted by steps; `overall` as `vla3d eval` writes it."""
    curves: dict[str, list[tuple[int, dict]]] = defaultdict(list)
    for path in paths:
        result = json.loads(path.read_text())
        arm, sep, steps = result["label"].partition("@")
        if not sep or not steps.isdigit():
            raise SystemExit(f"{path}: label {result['label']!r} is not ARM@STEPS")
        curves[arm].append((int(steps), result["overall"]))
    return {arm: sorted(points, key=lambda point: point[0]) for arm, points in sorted(curves.items())}


def steps_to_reach(points: list[tuple[int, dict]], threshold: float) -> int | None:
    return next((steps for steps, overall in points if overall["rate"] >= threshold), None)


def markdown(curves: dict[str, list[tuple[int, dict]]], thresholds: list[float]) -> str:
    steps = sorted({s for points in curves.values() for s, _ in points})
    lines = ["| steps | " + " | ".join(curves) + " |", "|---|" + "---|" * len(curves)]
    for step in steps:
        cells = []
        for points in curves.values():
            overall = dict(points).get(step)
            cells.append("–" if overall is None else
                         f"{100 * overall['rate']:.0f} % [{100 * overall['ci95_low']:.1f}, "
                         f"{100 * overall['ci95_high']:.1f}] ({overall['successes']}/{overall['trials']})")
        lines.append(f"| {step} | " + " | ".join(cells) + " |")
    lines += ["", "| first reaches | " + " | ".join(curves) + " |", "|---|" + "---|" * len(curves)]
    for threshold in thresholds:
        reached = [steps_to_reach(points, threshold) for points in curves.values()]
        lines.append(f"| {100 * threshold:.0f} % | " + " | ".join("not reached" if s is None else f"{s} steps"
                                                                for s in reached) + " |")
    return "\n".join(lines) + "\n"


def plot(curves: dict[str, list[tuple[int, dict]]], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 4))
    for arm, points in curves.items():
        steps = [s for s, _ in points]
        axis.plot(steps, [100 * o["rate"] for _, o in points], marker="o", label=arm)
        axis.fill_between(steps, [100 * o["ci95_low"] for _, o in points], [100 * o["ci95_high"] for _, o in points],
                          alpha=0.2)
    axis.set_xlabel("optimiser steps since the shared checkpoint")
    axis.set_ylabel("success, % (95 % Wilson interval)")
    axis.set_ylim(0, 100)
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("evals", type=Path, nargs="+")
    parser.add_argument("--markdown", type=Path, required=True)
    parser.add_argument("--plot", type=Path, required=True)
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.5, 0.7])
    args = parser.parse_args()
    curves = load_curves(args.evals)
    table = markdown(curves, args.thresholds)
    args.markdown.write_text(table)
    plot(curves, args.plot)
    print(table, end="")


if __name__ == "__main__":
    main()
