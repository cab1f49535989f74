"""Render the fault suite's observations (JSON lines written by the cases when $VLA3D_FAULT_REPORT is
set, see fault_rig.report) as the table of docs/reliability.md, between its marker comments:

    VLA3D_FAULT_REPORT=/tmp/faults.jsonl .venv/bin/python -m pytest test/test_fault_*.py -q
    .venv/bin/python test/fault_report.py /tmp/faults.jsonl docs/reliability.md
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

BEGIN, END = "<!-- fault-table:begin -->", "<!-- fault-table:end -->"


def _cell(text) -> str:
    text = re.sub(r"/tmp/\S+/", "…/", str(text))   # temporary paths of the run
    text = text.replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= 220 else text[:217] + "…"


def render(entries: list[dict]) -> str:
    rows = ["| # | case | /diagnostics (first matching status) | log (/rosout or console) | command topic | "
            "published / recorded | known gap |",
            "|---|---|---|---|---|---|---|"]
    for index, entry in enumerate(entries, 1):
        rows.append(f"| {index} | {_cell(entry['case'])} | {_cell(entry['diagnostic'])} | {_cell(entry['log'])} | "
                    f"{_cell(entry['command'])}{' — ' + _cell(entry['detail']) if entry.get('detail') else ''} | "
                    f"{entry['published']} / {entry['recorded']} | {_cell(entry.get('gap') or '')} |")
    return "\n".join(rows)


def main(report: str, document: str) -> None:
    entries = [json.loads(line) for line in Path(report).read_text().splitlines() if line.strip()]
    path = Path(document)
    text = path.read_text()
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    path.write_text(text[:start] + "\n" + render(entries) + "\n" + text[end:])


if __name__ == "__main__":
    main(*sys.argv[1:3])
