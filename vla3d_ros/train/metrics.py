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


def plot_metrics(csv_path: Path, png_path: Path, *, title: str = "") -> Path:
    """One small panel per metric column against the step; losses on a log axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(csv_path)
    if not rows:
        raise ValueError(f"{csv_path} holds no metrics to plot")
    columns = [column for column in rows[0] if column != STEP]
    num_cols = min(4, len(columns))
    num_rows = math.ceil(len(columns) / num_cols)
    figure, axes = plt.subplots(num_rows, num_cols, figsize=(3.2 * num_cols, 2.4 * num_rows), squeeze=False)
    steps = [row[STEP] for row in rows]
    for axis, column in zip(axes.flat, columns):
        values = [row[column] for row in rows]
        axis.plot(steps, values, linewidth=1.0)
        positive = [value for value in values if math.isfinite(value)]
        if "loss" in column and positive and min(positive) > 0:
            axis.set_yscale("log")
        axis.set_title(column, fontsize=8)
        axis.tick_params(labelsize=7)
    for axis in list(axes.flat)[len(columns):]:
        axis.axis("off")
    if title:
        figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    png_path = Path(png_path)
    figure.savefig(png_path, dpi=90)
    plt.close(figure)
    return png_path
