"""The validation report: one entry per quirk found in the ReDSM5 files.

Quirk names are shared with the synthetic generator, whose manifest.json records how many
of each it planted, so a test can compare the validator's counts with the truth.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Names of the quirks, in report order. "warning" quirks become errors under --strict;
# "info" entries describe the data (they need no fixing: windows handle long posts, and
# SPECIAL_CASE is a documented label, not a mistake).
UNKNOWN_SYMPTOM = "unknown_symptom"
DUPLICATE_PAIR_ROWS = "duplicate_pair_rows"
MIXED_STATUS_PAIRS = "mixed_status_pairs"
NORMALIZED_MATCH = "normalized_match"
UNLOCATABLE_EVIDENCE = "unlocatable_evidence"
UNANNOTATED_POSTS = "unannotated_posts"
EVIDENCE_BEYOND_512 = "evidence_beyond_512_tokens"
SPECIAL_CASE_ROWS = "special_case_rows"

QUIRK_NAMES = (UNKNOWN_SYMPTOM, DUPLICATE_PAIR_ROWS, MIXED_STATUS_PAIRS, NORMALIZED_MATCH,
               UNLOCATABLE_EVIDENCE, UNANNOTATED_POSTS, EVIDENCE_BEYOND_512, SPECIAL_CASE_ROWS)
INFO_QUIRKS = frozenset({EVIDENCE_BEYOND_512, SPECIAL_CASE_ROWS})
EXAMPLES = 5


@dataclass(frozen=True)
class Quirk:
    """One kind of quirk: how many, where (first rows), what was done about it.

    ``rows`` are 1-based data rows of ``file`` (header excluded); ``action`` is one of
    handled / skipped / reported.
    """

    name: str
    count: int
    rows: tuple[int, ...]
    file: str
    column: str
    action: str
    detail: str
    fix: str

    @property
    def level(self) -> str:
        return "info" if self.name in INFO_QUIRKS else "warning"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "count": self.count, "rows": list(self.rows),
                "file": self.file, "column": self.column, "action": self.action,
                "level": self.level, "detail": self.detail}

    def line(self) -> str:
        rows = ", ".join(str(r) for r in self.rows)
        more = ", ..." if self.count > len(self.rows) else ""
        where = f"{'row' if self.count == 1 else 'rows'} {rows}{more}" if rows else "-"
        return (f"{self.level:7} {self.name:28} {self.count:5}  {self.action:8} "
                f"{self.file} {where}: {self.detail}")


@dataclass
class Report:
    """Everything ``launch data validate`` prints. Only quirks with count > 0 are listed."""

    data_dir: str
    posts: int = 0
    annotation_rows: int = 0
    pairs: int = 0
    present_pairs: int = 0
    spans: int = 0
    quirks: list[Quirk] = field(default_factory=list)

    def add(self, name: str, rows: list[int], *, file: str, column: str, action: str,
            detail: str, fix: str, count: int | None = None) -> None:
        """Record a quirk if it occurred (``count`` defaults to ``len(rows)``)."""
        n = len(rows) if count is None else count
        if n:
            self.quirks.append(Quirk(name, n, tuple(rows[:EXAMPLES]), file, column, action,
                                     detail, fix))

    def counts(self) -> dict[str, int]:
        """Every quirk name mapped to its count (0 when absent)."""
        found = {q.name: q.count for q in self.quirks}
        return {name: found.get(name, 0) for name in QUIRK_NAMES}

    def warnings(self) -> list[Quirk]:
        return [q for q in self.quirks if q.level == "warning"]

    def to_dict(self) -> dict[str, Any]:
        return {"data_dir": self.data_dir, "posts": self.posts,
                "annotation_rows": self.annotation_rows, "pairs": self.pairs,
                "present_pairs": self.present_pairs, "spans": self.spans,
                "quirks": [q.to_dict() for q in self.quirks], "counts": self.counts()}

    def lines(self) -> list[str]:
        head = [f"data: {self.data_dir}",
                f"{self.posts} posts, {self.annotation_rows} annotation rows, {self.pairs} "
                f"pairs ({self.present_pairs} present), {self.spans} evidence spans located"]
        body = [q.line() for q in self.quirks] or ["no quirks found"]
        warn = len(self.warnings())
        summary = (f"summary: {len(self.quirks)} kinds of quirk ({warn} warnings, "
                   f"{len(self.quirks) - warn} info); all handled or reported, data usable "
                   "(--strict makes warnings errors)")
        return head + body + [summary]
