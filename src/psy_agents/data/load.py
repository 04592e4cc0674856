"""Read the two ReDSM5 CSV files and reject what cannot be used, one clear line per problem.

Row numbers in messages are 1-based data rows (the header is not counted); a decoding
error names the file's line number instead, since no row could be parsed. Rows that can be
handled (an unknown symptom value, say) are kept for the validator to report; rows that
cannot (a status of 3, an empty post) raise :class:`DataError`.
"""

from __future__ import annotations

import hashlib
import io
import os
from dataclasses import dataclass
from pathlib import Path

from psy_agents.data.criteria import SPECIAL_CASE, SYMPTOMS
from psy_agents.data.pairs import Annotation
from psy_agents.errors import DataError

POSTS_FILE = "redsm5_posts.csv"
ANNOTATIONS_FILE = "redsm5_annotations.csv"
POSTS_COLUMNS = ("post_id", "text")
ANNOTATION_COLUMNS = ("post_id", "sentence_id", "sentence_text", "DSM5_symptom", "status",
                      "explanation")
KNOWN_LABELS = frozenset((*SYMPTOMS, SPECIAL_CASE))
_WHERE = "put it in the data directory (see data/README.md), or pass --data-dir / set PSY_DATA_DIR"


@dataclass(frozen=True)
class RawData:
    """The parsed files: posts in file order, every annotation row (unknown labels too)."""

    posts_path: Path
    annotations_path: Path
    posts: dict[str, str]
    post_rows: dict[str, int]
    annotations: tuple[Annotation, ...]
    data_hash: str


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8, newlines as given) to ``path`` via a temp file + rename.

    Readers never see a half-written file. Raises OSError; the temp file is removed.
    """
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_text(text, encoding="utf-8", newline="")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found", _WHERE) from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, not a CSV file", _WHERE) from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror})",
                        "check the file's permissions") from None


def _frame(path: Path, data: bytes, columns: tuple[str, ...]):
    """Parse CSV bytes into a DataFrame of strings with the required columns."""
    import pandas as pd

    if not data.strip():
        raise DataError(f"{path}: the file is empty", f"write the header {','.join(columns)} "
                        "and the data rows, or restore the original file")
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DataError(f"{path} line {line}: byte 0x{data[exc.start]:02x} is not valid UTF-8",
                        "re-save the file as UTF-8") from None
    try:
        frame = pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False,
                            encoding="utf-8")
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"{path}: not a valid CSV file ({' '.join(str(exc).split())})",
                        "fix the quoting at the line named, or restore the original file") from None
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(f"{path} header, column {missing[0]}: the column is missing "
                        f"(found: {', '.join(map(str, frame.columns))})",
                        f"the header must name {','.join(columns)}")
    if frame.empty:
        raise DataError(f"{path}: the file has a header but no data rows",
                        "restore the original file")
    return frame


def _posts(path: Path, frame) -> tuple[dict[str, str], dict[str, int]]:
    posts: dict[str, str] = {}
    rows: dict[str, int] = {}
    for row, (post_id, text) in enumerate(zip(frame["post_id"], frame["text"], strict=True), 1):
        post_id = post_id.strip()
        if not post_id:
            raise DataError(f"{path} row {row}, column post_id: the post id is empty",
                            "fill in the post id or remove the row")
        if post_id in posts:
            raise DataError(f"{path} row {row}, column post_id: post id {post_id!r} repeats "
                            f"row {rows[post_id]}", "remove one of the two rows or give it a new id")
        if not text.strip():
            raise DataError(f"{path} row {row}, column text: the post text is empty",
                            "restore the post's text or remove the row")
        posts[post_id] = text
        rows[post_id] = row
    return posts, rows


def _annotations(path: Path, frame, posts: dict[str, str], posts_path: Path
                 ) -> tuple[Annotation, ...]:
    out: list[Annotation] = []
    cols = ("post_id", "sentence_text", "DSM5_symptom", "status")
    for row, (post_id, sentence, symptom, status) in enumerate(
            zip(*(frame[c] for c in cols), strict=True), 1):
        post_id, status = post_id.strip(), status.strip()
        if post_id not in posts:
            raise DataError(f"{path} row {row}, column post_id: post {post_id!r} is not in "
                            f"{posts_path}", "add the post to the posts file or remove the row")
        if status not in ("0", "1"):
            raise DataError(f"{path} row {row}, column status: value {status!r} is not 0 or 1",
                            "fix the row or remove it")
        out.append(Annotation(row, post_id, symptom.strip(), int(status), sentence))
    return tuple(out)


def read_data(data_dir: Path) -> RawData:
    """Read and check ``redsm5_posts.csv`` and ``redsm5_annotations.csv`` in ``data_dir``.

    ``data_hash`` is the sha256 of the two files' bytes (posts first). Reads only; writes
    nothing.

    Raises:
        DataError: a file is missing, empty, not UTF-8, not CSV, lacks a column, or has a
            row that cannot be used (repeated or empty post id, empty post text, an
            annotation of a missing post, a status other than 0/1).
    """
    if not data_dir.is_dir():
        raise DataError(f"{data_dir}: data directory not found",
                        "pass --data-dir or set PSY_DATA_DIR to the folder holding the two "
                        "ReDSM5 CSV files (see data/README.md)")
    posts_path, ann_path = data_dir / POSTS_FILE, data_dir / ANNOTATIONS_FILE
    posts_bytes, ann_bytes = _read_bytes(posts_path), _read_bytes(ann_path)
    posts, post_rows = _posts(posts_path, _frame(posts_path, posts_bytes, POSTS_COLUMNS))
    annotations = _annotations(ann_path, _frame(ann_path, ann_bytes, ANNOTATION_COLUMNS),
                               posts, posts_path)
    digest = hashlib.sha256()
    for blob in (posts_bytes, ann_bytes):
        digest.update(len(blob).to_bytes(8, "big"))
        digest.update(blob)
    return RawData(posts_path, ann_path, posts, post_rows, annotations, digest.hexdigest())
