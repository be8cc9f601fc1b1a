"""The pipeline's closing table: one row per evaluation stage, in the R1 paper's shape
(pass@1 over k samples, cons@k, plus the behaviour the paper tracks: format, language
consistency, response length)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

COLUMNS = (  # (header, metrics key, percent?)
    ("pass@1", "pass_at_1", True),
    ("cons@k", "cons_at_k", True),
    ("greedy", "greedy_accuracy", True),
    ("format", "format_rate", True),
    ("lang. consistency", "language_consistency", True),
    ("length (tokens)", "mean_response_tokens", False),
)


def summary_rows(records: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """{label, metrics...} for every finished eval stage, in pipeline order."""
    rows = []
    for name, record in records.items():
        if record.get("command") == "eval" and record.get("metrics"):
            rows.append({"stage": name, "label": record.get("label") or name, **record["metrics"]})
    return rows


def summary_table(rows: list[dict[str, Any]], title: str) -> Table:
    k = next((row.get("k") for row in rows if row.get("k")), None)
    table = Table(title=title, header_style="bold")
    table.add_column("model")
    for header, _, _ in COLUMNS:
        table.add_column(header.replace("@k", f"@{k}") if k else header, justify="right")
    for row in rows:
        cells = []
        for _, key, pct in COLUMNS:
            value = row.get(key)
            cells.append("-" if value is None else (f"{100 * value:.1f}%" if pct else f"{value:.1f}"))
        table.add_row(row["label"], *cells)
    return table


def print_summary(cfg: Any, records: dict[str, dict[str, Any]], console: Console) -> None:
    rows = summary_rows(records)
    if rows:
        console.print(summary_table(rows, cfg.title))
