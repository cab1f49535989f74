"""Results tables and plots from `vla3d eval` JSON files (docs/results.md, docs/*.png).

Every eval JSON describes one (checkpoint, suite) pair: its `label` (the policy variant, e.g.
"2D baseline", "3D full"), `suite`, and `overall` / `per_task` / `per_perturbation` success
records ({successes, trials, rate, ci95_low, ci95_high}). The helpers here only read those
files, so the tables can be regenerated at any time from the committed JSONs:

    python -m vla3d_ros.evaluate.report docs/eval/*.json --markdown docs/results.md --plot docs/results.png

`episode_strip` renders a few frames of one rollout side by side (one row per camera) and is
what the evaluator calls to write the PNG strips.
"""
from __future__ import annotations

import argparse
import json
from collections import OrderedDict
from pathlib import Path
from typing import Sequence

import numpy as np

from vla3d_ros.evaluate.stats import SuccessRate


def load_results(paths: Sequence[Path]) -> list[dict]:
    results = []
    for path in paths:
        document = json.loads(Path(path).read_text())
        for key in ("label", "suite", "overall"):
            if key not in document:
                raise ValueError(f"{path} is not a vla3d eval result: key {key!r} missing")
        results.append(document)
    return results


def _cell_text(record: dict) -> str:
    """"62.0 [48.2, 74.1] (31/50)": rate and Wilson 95% CI in percent, with the raw counts."""
    rate = SuccessRate(int(record["successes"]), int(record["trials"]))
    low, high = rate.interval
    if rate.trials == 0:
        return "n/a"
    return f"{100 * rate.rate:.1f} [{100 * low:.1f}, {100 * high:.1f}] ({rate.successes}/{rate.trials})"


GROUPINGS = ("suite", "perturbation")


def _ordered(values) -> list:
    return list(OrderedDict.fromkeys(values))


def suite_table(results: list[dict]) -> str:
    """Markdown: one row per policy variant, one column per suite (overall success)."""
    labels = _ordered(r["label"] for r in results)
    suites = _ordered(r["suite"] for r in results)
    cells = {(r["label"], r["suite"]): _cell_text(r["overall"]) for r in results}
    lines = ["| policy | " + " | ".join(suites) + " |", "|---|" + "---|" * len(suites)]
    for label in labels:
        lines.append(f"| {label} | " + " | ".join(cells.get((label, s), "–") for s in suites) + " |")
    return "\n".join(lines)


def breakdown_table(results: list[dict], key: str) -> str:
    """Markdown: rows (label, suite), one column per task (key="per_task") or perturbation."""
    columns = _ordered(name for r in results for name in r.get(key, {}))
    lines = ["| policy | suite | " + " | ".join(columns) + " |", "|---|---|" + "---|" * len(columns)]
    for r in results:
        row = [_cell_text(r[key][c]) if c in r.get(key, {}) else "–" for c in columns]
        lines.append(f"| {r['label']} | {r['suite']} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def markdown_report(results: list[dict], *, title: str = "Closed-loop results", by: str = "suite") -> str:
    """The whole results section: overall table, per-task and per-perturbation breakdowns
    (`by="perturbation"`: the per-perturbation table has one row per cell, for sweeps)."""
    commands = _ordered(r.get("command", "") for r in results if r.get("command"))
    per_perturbation = perturbation_table(results) if by == "perturbation" else \
        breakdown_table(results, "per_perturbation")
    parts = [f"# {title}", "",
             "Success rate in percent with the 95% Wilson interval and the raw counts.", "",
             "## Per suite", "", suite_table(results), "",
             "## Per task", "", breakdown_table(results, "per_task"), "",
             "## Per perturbation", "", per_perturbation, ""]
    if commands:
        parts += ["## Commands", "", "```", *commands, "```", ""]
    return "\n".join(parts)


def records_by(results: list[dict], by: str) -> dict[tuple[str, str], dict]:
    """{(label, x): success record}; x = the suite (`by="suite"`, overall success of each file) or
    each perturbation cell inside the files (`by="perturbation"`, e.g. one `--suite all` file)."""
    if by not in GROUPINGS:
        raise ValueError(f"by must be one of {GROUPINGS}, got {by!r}")
    if by == "suite":
        return {(r["label"], r["suite"]): r["overall"] for r in results}
    return {(r["label"], cell): record for r in results for cell, record in r.get("per_perturbation", {}).items()}


def perturbation_table(results: list[dict]) -> str:
    """Markdown: one row per perturbation cell, one column per policy variant (long sweeps)."""
    records = records_by(results, "perturbation")
    labels = _ordered(label for label, _ in records)
    cells = _ordered(cell for _, cell in records)
    lines = ["| perturbation | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
    for cell in cells:
        lines.append(f"| {cell} | " + " | ".join(
            _cell_text(records[(label, cell)]) if (label, cell) in records else "–" for label in labels) + " |")
    return "\n".join(lines)


def bar_plot(results: list[dict], path: Path, *, title: str = "success rate (95% Wilson CI)",
             by: str = "suite") -> Path:
    """Grouped bars: x = suite or perturbation cell (`records_by`), one bar per policy variant,
    error bars = Wilson interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = records_by(results, by)
    labels = _ordered(label for label, _ in records)
    suites = _ordered(x for _, x in records)
    by_cell = {key: SuccessRate(int(record["successes"]), int(record["trials"])) for key, record in records.items()}
    width = 0.8 / max(1, len(labels))
    figure, axis = plt.subplots(figsize=(max(4.0, 1.4 * len(suites) * max(1, len(labels)) * 0.6 + 2), 3.2))
    x = np.arange(len(suites))
    for index, label in enumerate(labels):
        rates, lows, highs = [], [], []
        for suite in suites:
            rate = by_cell.get((label, suite))
            if rate is None or rate.trials == 0:
                rates.append(np.nan), lows.append(0.0), highs.append(0.0)
                continue
            low, high = rate.interval
            rates.append(100 * rate.rate)
            lows.append(100 * (rate.rate - low))
            highs.append(100 * (high - rate.rate))
        axis.bar(x + (index - (len(labels) - 1) / 2) * width, rates, width, yerr=[lows, highs],
                 capsize=2, label=label)
    axis.set_xticks(x, suites, rotation=90 if len(suites) > 8 else 0, fontsize=7 if len(suites) > 8 else None)
    axis.set_ylim(0, 100)
    axis.set_ylabel("success %")
    axis.set_title(title, fontsize=9)
    axis.legend(fontsize=7, loc="upper right")
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def episode_strip(frames: Sequence[np.ndarray], path: Path, *, title: str = "",
                  max_frames: int = 6) -> Path:
    """PNG of up to `max_frames` evenly spaced (V, H, W, 3) uint8 frames: columns = time, rows = cameras."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if len(frames) == 0:
        raise ValueError("episode_strip needs at least one frame")
    picks = np.unique(np.linspace(0, len(frames) - 1, min(max_frames, len(frames))).round().astype(int))
    chosen = [np.asarray(frames[i]) for i in picks]
    if any(f.ndim != 4 or f.shape[-1] != 3 or f.dtype != np.uint8 for f in chosen):
        raise ValueError(f"frames must be (V, H, W, 3) uint8, got {chosen[0].shape} {chosen[0].dtype}")
    rows = np.concatenate([np.concatenate(list(frame), axis=0) for frame in chosen], axis=1)  # views stacked
    figure, axis = plt.subplots(figsize=(1.6 * len(chosen), 1.6 * chosen[0].shape[0] + 0.3))
    axis.imshow(rows)
    axis.set_xticks([(i + 0.5) * chosen[0].shape[2] for i in range(len(chosen))], [f"t={i}" for i in picks],
                    fontsize=6)
    axis.set_yticks([])
    if title:
        axis.set_title(title, fontsize=7)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="results table and bar plot from vla3d eval JSONs")
    parser.add_argument("results", nargs="+", type=Path)
    parser.add_argument("--markdown", type=Path, required=True)
    parser.add_argument("--plot", type=Path, required=True)
    parser.add_argument("--title", default="Closed-loop results")
    parser.add_argument("--by", choices=GROUPINGS, default="suite",
                        help="bars per suite (overall of each file) or per perturbation cell (sweeps)")
    args = parser.parse_args(argv)
    results = load_results(args.results)
    args.markdown.parent.mkdir(parents=True, exist_ok=True)
    args.markdown.write_text(markdown_report(results, title=args.title, by=args.by))
    bar_plot(results, args.plot, by=args.by)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
