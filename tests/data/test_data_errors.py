"""Every bad input ends in one line naming file/row/column and the fix, exit 2, nothing written."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

POSTS, ANNS = "redsm5_posts.csv", "redsm5_annotations.csv"


def _rows(path: Path) -> list[list[str]]:
    return list(csv.reader(io.StringIO(path.read_text(encoding="utf-8"))))


def _write(path: Path, rows: list[list[str]]) -> None:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    path.write_text(buf.getvalue(), encoding="utf-8")


def _edit(path: Path, row: int, column: str, value: str) -> None:
    """Set data row ``row`` (1-based, header excluded) of ``column`` to ``value``."""
    rows = _rows(path)
    rows[row][rows[0].index(column)] = value
    _write(path, rows)


def _missing_file(d: Path) -> str:
    (d / POSTS).unlink()
    return f"error: {d / POSTS}: file not found — put it in the data directory"


def _missing_column(d: Path) -> str:
    rows = [r[:4] + r[5:] for r in _rows(d / ANNS)]
    _write(d / ANNS, rows)
    return f"error: {d / ANNS} header, column status: the column is missing"


def _empty_file(d: Path) -> str:
    (d / ANNS).write_bytes(b"")
    return f"error: {d / ANNS}: the file is empty — write the header"


def _header_only(d: Path) -> str:
    (d / POSTS).write_text("post_id,text\n", encoding="utf-8")
    return f"error: {d / POSTS}: the file has a header but no data rows"


def _not_utf8(d: Path) -> str:
    data = (d / POSTS).read_bytes().split(b"\n")
    line = next(i for i in range(3, len(data)) if b"I" in data[i])  # a post may span lines
    data[line] = data[line].replace(b"I", b"\xff", 1)
    (d / POSTS).write_bytes(b"\n".join(data))
    return (f"error: {d / POSTS} line {line + 1}: byte 0xff is not valid UTF-8 — "
            "re-save the file as UTF-8")


def _duplicate_post(d: Path) -> str:
    first = _rows(d / POSTS)[1][0]
    _edit(d / POSTS, 5, "post_id", first)
    return (f"error: {d / POSTS} row 5, column post_id: post id {first!r} repeats row 1 — "
            "remove one of the two rows or give it a new id")


def _orphan_annotation(d: Path) -> str:
    _edit(d / ANNS, 14, "post_id", "s_0_00")
    return (f"error: {d / ANNS} row 14, column post_id: post 's_0_00' is not in {d / POSTS} — "
            "add the post to the posts file or remove the row")


def _bad_status(d: Path) -> str:
    _edit(d / ANNS, 14, "status", "3")
    return (f"error: {d / ANNS} row 14, column status: value '3' is not 0 or 1 — "
            "fix the row or remove it")


def _empty_text(d: Path) -> str:
    _edit(d / POSTS, 7, "text", "   ")
    return (f"error: {d / POSTS} row 7, column text: the post text is empty — "
            "restore the post's text or remove the row")


def _empty_post_id(d: Path) -> str:
    _edit(d / POSTS, 2, "post_id", "")
    return f"error: {d / POSTS} row 2, column post_id: the post id is empty"


def _bad_quoting(d: Path) -> str:
    (d / ANNS).write_text('post_id,sentence_id,sentence_text,DSM5_symptom,status,explanation\n'
                          'a,b,"unclosed,c,1,x\n', encoding="utf-8")
    return f"error: {d / ANNS}: not a valid CSV file"


CASES = {
    "missing_file": _missing_file, "missing_column": _missing_column,
    "empty_file": _empty_file, "header_only": _header_only, "not_utf8": _not_utf8,
    "duplicate_post": _duplicate_post, "orphan_annotation": _orphan_annotation,
    "bad_status": _bad_status, "empty_text": _empty_text, "empty_post_id": _empty_post_id,
    "bad_quoting": _bad_quoting,
}


def _assert_one_error_line(result, expected_start: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(expected_start), lines[0]
    assert " — " in lines[0]
    assert result.stdout == ""


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("command", ["validate", "split"])
def test_bad_input_is_one_line_exit_2_nothing_written(case, command, data_copy, launch,
                                                      snapshot):
    expected = CASES[case](data_copy)
    before = snapshot(data_copy)
    result = launch("data", command, "--data-dir", data_copy)
    _assert_one_error_line(result, expected)
    assert snapshot(data_copy) == before


def test_unknown_symptom_is_an_error_only_under_strict(data_copy, launch, snapshot):
    assert launch("data", "validate", "--data-dir", data_copy).exit_code == 0
    before = snapshot(data_copy)
    result = launch("data", "split", "--data-dir", data_copy, "--strict")
    row = next(i for i, r in enumerate(_rows(data_copy / ANNS)) if r[3] == "LEEP_ISSUES")
    _assert_one_error_line(
        result, f"error: {data_copy / ANNS} row {row}, column DSM5_symptom: unknown symptom "
        "'LEEP_ISSUES' (unknown_symptom: 1 rows; 5 more kinds of quirk; --strict) — change it "
        "to one of DEPRESSED_MOOD, ANHEDONIA,")
    assert snapshot(data_copy) == before


@pytest.mark.parametrize(("ratios", "message"), [
    ("0.7,0.2,0.2", "error: --ratios 0.7,0.2,0.2: the ratios sum to 1.1, but must sum to 1 — "
                    "pass three positive numbers summing to 1, e.g. --ratios 0.7,0.15,0.15"),
    ("0.8,0.2", "error: --ratios 0.8,0.2: 2 values given, but train,val,test needs 3"),
    ("0.7,0.3,0", "error: --ratios 0.7,0.3,0: every ratio must be > 0"),
    ("a,b,c", "error: --ratios a,b,c: not a comma-separated list of numbers"),
])
def test_bad_ratios(ratios, message, data_copy, launch, snapshot):
    before = snapshot(data_copy)
    result = launch("data", "split", "--data-dir", data_copy, "--ratios", ratios)
    _assert_one_error_line(result, message)
    assert snapshot(data_copy) == before


@pytest.mark.parametrize(("content", "message"), [
    ("{not json", " line 1: the splits file is not valid JSON (Expecting property name "
                  "enclosed in double quotes)"),
    ("[]", ": the splits file is not a JSON object"),
    ('{"version": 1}', ", key seed: missing or not a int"),
])
def test_unreadable_splits_file(content, message, data_copy, launch, snapshot):
    """Each command's fix names only what that command has: `split` its --force, `stats`
    (which has no --force) the `launch data split` command that rewrites the file."""
    bad = data_copy / "splits-13.json"
    bad.write_text(content, encoding="utf-8")
    before = snapshot(data_copy)
    fixes = {"split": "pass --force to rewrite it",
             "stats": f"rewrite it with `launch data split --data-dir {data_copy} --seed 13 "
                      f"--ratios 0.7,0.15,0.15 --out {bad} --force`"}
    for command, fix in fixes.items():
        result = launch("data", command, "--data-dir", data_copy)
        _assert_one_error_line(result, f"error: {bad}{message} — delete {bad} or {fix}")
        assert result.stderr.strip().endswith(fix)
    assert snapshot(data_copy) == before


def test_missing_data_dir(tmp_path, launch):
    result = launch("data", "validate", "--data-dir", tmp_path / "nope")
    _assert_one_error_line(result, f"error: {tmp_path / 'nope'}: data directory not found")
