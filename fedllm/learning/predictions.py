"""`fedllm predict`'s output: a table for people, JSON lines or CSV to join back to the input."""

import csv
import json
import sys
from collections.abc import Sequence

from rich.console import Console
from rich.table import Table

Prediction = tuple[str, float] | None  # None: a blank line, not scored
FIELDS = ("line", "label", "probability")


def records(predictions: Sequence[Prediction]) -> list[dict[str, int | str | float | None]]:
    """One record per input line, numbered from 1 as editors and `sed -n` do."""
    return [
        {"line": number, "label": found[0] if found else None,
         "probability": round(found[1], 6) if found else None}
        for number, found in enumerate(predictions, start=1)
    ]  # fmt: skip


def write_predictions(
    reviews: Sequence[str], predictions: Sequence[Prediction], form: str, console: Console
) -> None:
    """Write the predictions to stdout as `table`, `jsonl` or `csv`."""
    rows = records(predictions)
    if form == "jsonl":
        for row in rows:
            sys.stdout.write(json.dumps(row) + "\n")
    elif form == "csv":
        writer = csv.DictWriter(sys.stdout, FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    else:
        table = Table("line", "label", "probability", "review")
        for row, review in zip(rows, reviews, strict=True):
            probability = row["probability"]
            shown = f"{probability:.3f}" if isinstance(probability, float) else ""
            table.add_row(str(row["line"]), str(row["label"] or ""), shown, review[:80])
        console.print(table)
    sys.stdout.flush()
