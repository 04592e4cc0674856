"""Load ReDSM5, find every known quirk (DESIGN.md §2), build the pairs, report it all.

Handled quirks are reported, never silently dropped; ``strict=True`` turns the first
warning-level quirk into a :class:`DataError` naming its file, row and column.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from psy_agents.data import report as q
from psy_agents.data.criteria import SPECIAL_CASE, SYMPTOMS, symptoms_for
from psy_agents.data.load import KNOWN_LABELS, RawData, read_data
from psy_agents.data.pairs import LocateReport, Pair, build_pairs
from psy_agents.data.report import Report
from psy_agents.errors import DataError

_OK = "nothing to do (or fix the rows and rerun with --strict)"


@dataclass(frozen=True)
class Dataset:
    """The validated data: posts in file order, 9 (or 10) pairs per post, the report."""

    data_dir: Path
    posts: dict[str, str]
    pairs: tuple[Pair, ...]
    symptoms: tuple[str, ...]
    report: Report
    data_hash: str


def _row_quirks(raw: RawData, report: Report, include_special_case: bool) -> None:
    ann = str(raw.annotations_path)
    unknown = [a for a in raw.annotations if a.symptom not in KNOWN_LABELS]
    if unknown:
        report.add(q.UNKNOWN_SYMPTOM, [a.row for a in unknown], file=ann, column="DSM5_symptom",
                   action="skipped", detail=f"unknown symptom {unknown[0].symptom!r}",
                   fix=f"change it to one of {', '.join(SYMPTOMS)}, {SPECIAL_CASE}, "
                   "or remove the row")
    groups: dict[tuple[str, str], list] = defaultdict(list)
    for a in raw.annotations:
        if a.symptom in SYMPTOMS:
            groups[(a.post_id, a.symptom)].append(a)
    repeats = sorted(a.row for rows in groups.values() for a in rows[1:])
    report.add(q.DUPLICATE_PAIR_ROWS, repeats, file=ann, column="post_id,DSM5_symptom",
               action="handled", detail="rows repeat a (post, symptom) pair; merged into one "
               "pair with several evidence sentences", fix=_OK)
    mixed = sorted(min(a.row for a in rows) for rows in groups.values()
                   if {a.status for a in rows} == {0, 1})
    report.add(q.MIXED_STATUS_PAIRS, mixed, file=ann, column="status", action="handled",
               detail="(post, symptom) pairs carry both status 0 and 1; labelled present",
               fix="keep one status per pair, or drop --strict")
    annotated = {a.post_id for a in raw.annotations}
    bare = [raw.post_rows[p] for p in raw.posts if p not in annotated]
    report.add(q.UNANNOTATED_POSTS, bare, file=str(raw.posts_path), column="post_id",
               action="handled", detail="posts have no annotation rows; all their pairs "
               "are absent", fix="annotate the posts, or drop --strict")
    special = [a.row for a in raw.annotations if a.symptom == SPECIAL_CASE]
    report.add(q.SPECIAL_CASE_ROWS, special, file=ann, column="DSM5_symptom",
               action="handled" if include_special_case else "skipped",
               detail="SPECIAL_CASE rows are not a criterion; "
               + ("kept as a tenth label" if include_special_case
                  else "excluded (--include-special-case keeps them)"), fix=_OK)


def _span_quirks(raw: RawData, located: LocateReport, report: Report) -> None:
    ann = str(raw.annotations_path)
    report.add(q.NORMALIZED_MATCH, sorted(located.normalized), file=ann,
               column="sentence_text", action="handled",
               detail="evidence sentences differ from the post in whitespace or Unicode form; "
               "located after NFKC + whitespace normalization",
               fix="copy the sentence verbatim from the post, or drop --strict")
    report.add(q.UNLOCATABLE_EVIDENCE, sorted(located.unlocatable), file=ann,
               column="sentence_text", action="reported",
               detail="evidence sentences not found in their post even after normalization; "
               "the pair keeps its label without that span",
               fix="correct sentence_text to the post's wording, or drop --strict")
    report.add(q.EVIDENCE_BEYOND_512, sorted(located.beyond_window), file=ann,
               column="sentence_text", action="handled",
               detail="evidence sentences start past the first 512 tokens of their post; "
               "overlapping windows cover them", fix=_OK)


def _raise_strict(report: Report) -> None:
    warnings = report.warnings()
    if warnings:
        first = warnings[0]
        others = f"; {len(warnings) - 1} more kinds of quirk" if len(warnings) > 1 else ""
        raise DataError(f"{first.file} row {first.rows[0]}, column {first.column}: "
                        f"{first.detail} ({first.name}: {first.count} rows{others}; --strict)",
                        first.fix)


def load_dataset(data_dir: Path, *, include_special_case: bool = False,
                 strict: bool = False) -> Dataset:
    """Read, check and pair the ReDSM5 files in ``data_dir``; never writes anything.

    Raises:
        DataError: unusable files or rows (see :func:`psy_agents.data.load.read_data`), or
            under ``strict`` any warning-level quirk.
    """
    raw = read_data(data_dir)
    symptoms = symptoms_for(include_special_case)
    report = Report(str(data_dir), posts=len(raw.posts), annotation_rows=len(raw.annotations))
    _row_quirks(raw, report, include_special_case)
    pairs, located = build_pairs(raw.posts, raw.annotations, symptoms)
    _span_quirks(raw, located, report)
    report.quirks.sort(key=lambda quirk: q.QUIRK_NAMES.index(quirk.name))
    report.pairs = len(pairs)
    report.present_pairs = sum(p.label for p in pairs)
    report.spans = sum(len(p.spans) for p in pairs)
    if strict:
        _raise_strict(report)
    return Dataset(data_dir, raw.posts, pairs, symptoms, report, raw.data_hash)
