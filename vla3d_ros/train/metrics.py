"""Training metrics: one CSV row per logged step, and a PNG plot of every column.

The CSV is the record; the plot is regenerated from it, so a resumed run's plot covers the
whole run. On resume, rows after the checkpoint's step are dropped (they were computed by the
interrupted run and will be recomputed identically), so the file never holds duplicate steps.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path

STEP = "step"


class MetricsLog:
    """Append-only CSV of metrics keyed by step; columns fixed by the first row written."""

    def __init__(self, path: Path, *, resume_from_step: int | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.columns: list[str] | None = None
        if resume_from_step is not None and self.path.exists():
            rows = [row for row in read_metrics(self.path) if row[STEP] <= resume_from_step]
            self._rewrite(rows)
        elif self.path.exists():
            self.path.unlink()

    def _rewrite(self, rows: list[dict[str, float]]) -> None:
        if not rows:
            self.path.unlink(missing_ok=True)
            return
        self.columns = list(rows[0])
        with self.path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=self.columns)
            writer.writeheader()
            writer.writerows(rows)

    def log(self, step: int, values: dict[str, float]) -> None:
        row = {STEP: int(step), **{key: float(value) for key, value in values.items()}}
        if self.columns is None:
            self.columns = list(row)
            with self.path.open("w", newline="") as handle:
                csv.DictWriter(handle, fieldnames=self.columns).writeheader()
        unknown = set(row) - set(self.columns)
        if unknown:
            raise ValueError(f"metrics {sorted(unknown)} not in the CSV header {self.columns}")
        with self.path.open("a", newline="") as handle:
            csv.DictWriter(handle, fieldnames=self.columns, restval="nan").writerow(row)


def read_metrics(path: Path) -> list[dict[str, float]]:
    with Path(path).open(newline="") as handle:
        rows = []
        for row in csv.DictReader(handle):
            parsed = {key: float(value) for key, value in row.items()}
            parsed[STEP] = int(parsed[STEP])
            rows.append(parsed)
    return rows


def _panels(columns: list[str]) -> list[tuple[str, list[str]]]:
    """Group columns: total/top-level losses, loss components, then one panel per other metric."""
    losses = [c for c in columns if c == "loss" or (c.startswith("loss/") and c.count("/") == 1)]
    components = [c for c in columns if c.startswith("loss/") and c.count("/") > 1]
    others = [c for c in columns if c not in losses and c not in components]
    panels = [("losses", losses)] if losses else []
    if components:
        panels.append(("loss components", components))
    return panels + [(c, [c]) for c in others]


def plot_metrics(csv_path: Path, png_path: Path, *, title: str = "") -> Path:
    """A few small panels against the step (losses together, log axis); no tight_layout, which
    costs seconds on a busy 2-core machine."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(csv_path)
    if not rows:
        raise ValueError(f"{csv_path} holds no metrics to plot")
    panels = _panels([column for column in rows[0] if column != STEP])
    num_cols = min(3, len(panels))
    num_rows = math.ceil(len(panels) / num_cols)
    figure, axes = plt.subplots(num_rows, num_cols, figsize=(4.0 * num_cols, 2.6 * num_rows), squeeze=False)
    figure.subplots_adjust(left=0.07, right=0.98, bottom=0.08, top=0.9, wspace=0.25, hspace=0.45)
    steps = [row[STEP] for row in rows]
    for axis, (name, columns) in zip(axes.flat, panels):
        finite = []
        for column in columns:
            values = [row[column] for row in rows]
            finite += [value for value in values if math.isfinite(value)]
            axis.plot(steps, values, linewidth=1.0, label=column.removeprefix("loss/"))
        if name.startswith("loss") and finite and min(finite) > 0:
            axis.set_yscale("log")
        if len(columns) > 1:
            axis.legend(fontsize=6, ncol=2)
        axis.set_title(name, fontsize=8)
        axis.tick_params(labelsize=7)
    for axis in list(axes.flat)[len(panels):]:
        axis.axis("off")
    if title:
        figure.suptitle(title, fontsize=9)
    png_path = Path(png_path)
    figure.savefig(png_path, dpi=90)
    plt.close(figure)
    return png_path
