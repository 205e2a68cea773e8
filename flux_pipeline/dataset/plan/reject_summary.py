"""A table's rejected rows summed up for one log line: counts by field and by reason, and the
first few rows (every reject is in rejects.parquet; a log event per row made a 50,000-reject table
take ten minutes)."""

from __future__ import annotations

from collections import Counter

from .prompt_table import Reject


class RejectSummary:
    """`add` each reject; `first` keeps the first `kept` of them; `text()` is the summary (naming
    the first `shown`), or None when nothing was rejected."""

    def __init__(self, kept: int = 20, shown: int = 5, reasons: int = 10):
        self.kept, self.shown, self.reasons = kept, shown, reasons
        self.by_field: Counter[str] = Counter()
        self.by_reason: Counter[tuple[str, str]] = Counter()
        self.first: list[Reject] = []

    def add(self, reject: Reject) -> None:
        self.by_field[reject.field] += 1
        self.by_reason[reject.field, reject.reason] += 1
        if len(self.first) < self.kept:
            self.first.append(reject)

    def text(self) -> str | None:
        total = self.by_field.total()
        if not total:
            return None
        lines = [
            f"{total} row(s) rejected (each with its reason in rejects.parquet)",
            "by field: " + ", ".join(f"{field} {count}" for field, count in self.by_field.most_common()),
            "most common reasons:",
            *(
                f"  {count} × {field}: {reason}"
                for (field, reason), count in self.by_reason.most_common(self.reasons)
            ),
        ]
        if (others := len(self.by_reason) - self.reasons) > 0:
            lines.append(f"  and {others} other reason(s)")
        lines.append("first rejected rows:")
        for r in self.first[: self.shown]:
            lines.append(f"  row {r.row} (prompt_id {r.prompt_id!r}): {r.field}: {r.reason}")
        return "\n".join(lines)
