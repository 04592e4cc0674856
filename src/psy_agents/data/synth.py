"""Usage: launch data synth --out data/sample --n-posts 300 --seed 0

A seeded generator of synthetic data in the exact ReDSM5 schema, with every quirk of the
real files planted on purpose and counted in ``manifest.json`` (the validator's tests
compare against these counts, which the generator knows by construction, not by running
the validator).
"""

from __future__ import annotations

import csv
import io
import json
import os
import random
import shutil
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

from psy_agents.data import report as q
from psy_agents.data import synth_text as txt
from psy_agents.data.criteria import SPECIAL_CASE, SYMPTOMS
from psy_agents.data.load import ANNOTATION_COLUMNS, ANNOTATIONS_FILE, POSTS_COLUMNS, POSTS_FILE
from psy_agents.data.load import write_text_atomic as _write_atomic
from psy_agents.data.pairs import token_offset
from psy_agents.errors import DataError

MANIFEST_FILE = "manifest.json"

# Share of posts showing each symptom, roughly shaped like ReDSM5 (mood most common).
PREVALENCE = dict(zip(SYMPTOMS, (0.30, 0.15, 0.10, 0.15, 0.08, 0.15, 0.22, 0.12, 0.18),
                      strict=True))
SECOND_SENTENCE = 0.30   # a present pair gets a second evidence row (repeated pair rows)
HARD_NEGATIVE = 0.04     # an absent pair gets an explicit status-0 denial row
LONG_POSTS = 0.08        # posts whose evidence sits after thousands of filler tokens


HARD_NEGATIVE_KIND = "hard_negative"


@dataclass(frozen=True)
class SynthManifest:
    """What :func:`write_synthetic` wrote and which quirks it planted (exact counts).

    ``hard_negatives`` counts the explicit status-0 denial rows of absent pairs (their
    sentence shares the symptom's words); ``planted_rows`` gives the 1-based annotation data
    rows of the quirks a test must find by row (the misspelled symptom).
    """

    seed: int
    n_posts: int
    n_annotations: int
    quirks: dict[str, int]
    hard_negatives: int
    planted_rows: dict[str, list[int]]
    files: tuple[str, ...] = (POSTS_FILE, ANNOTATIONS_FILE)


@dataclass
class _Row:
    symptom: str
    status: int
    sentence: str
    kind: str = ""  # HARD_NEGATIVE_KIND or a quirk name, for the manifest


@dataclass
class _Item:
    """One sentence of a post, with the annotation rows pointing at it."""

    text: str
    rows: list[_Row] = field(default_factory=list)
    late: bool = False


@dataclass
class _Post:
    post_id: str
    long: bool
    items: list[_Item] = field(default_factory=list)


def _post_ids(rng: random.Random, n: int) -> list[str]:
    ids: dict[str, None] = {}  # insertion-ordered: a set's order would vary per process
    while len(ids) < n:
        ids[f"s_{rng.randint(100, 9999)}_{rng.randint(10, 99)}"] = None
    return list(ids)


def _symptom_items(rng: random.Random, long: bool, counts: dict[str, int]) -> list[_Item]:
    present = [s for s in SYMPTOMS if rng.random() < PREVALENCE[s]]
    if long and len(present) < 2:
        present += rng.sample([s for s in SYMPTOMS if s not in present], 2 - len(present))
    items: list[_Item] = []
    for s in present:
        n = 2 if rng.random() < SECOND_SENTENCE else 1
        counts[q.DUPLICATE_PAIR_ROWS] += n - 1
        items += [_Item(t, [_Row(s, 1, t)]) for t in txt.evidence_sentences(rng, s, n)]
    for s in SYMPTOMS:
        if s not in present and rng.random() < HARD_NEGATIVE:
            t = rng.choice(txt.NEGATIVE[s])
            items.append(_Item(t, [_Row(s, 0, t, HARD_NEGATIVE_KIND)]))
    if not items:  # an annotated post has at least one row
        s = rng.choice(SYMPTOMS)
        t = rng.choice(txt.NEGATIVE[s])
        items.append(_Item(t, [_Row(s, 0, t, HARD_NEGATIVE_KIND)]))
    return items


def _plan(rng: random.Random, n_posts: int, n_unannotated: int,
          counts: dict[str, int]) -> list[_Post]:
    posts = []
    for i, post_id in enumerate(_post_ids(rng, n_posts)):
        if i < n_unannotated:
            posts.append(_Post(post_id, False, []))
            continue
        long = rng.random() < LONG_POSTS
        posts.append(_Post(post_id, long, _symptom_items(rng, long, counts)))
    return posts


def _fullwidth(text: str) -> str:
    """Letters, digits and punctuation of ``text`` as their full-width forms (NFKC undoes it)."""
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


def _perturb(item: _Item, variant: int) -> None:
    """Make the post's copy and the annotated sentence differ only up to normalization."""
    row = item.rows[0]
    first, rest = item.text.split(" ", 1)
    if variant == 0:    # double space in the post
        item.text = f"{first}  {rest}"
    elif variant == 1:  # full-width letters in the annotation
        row.sentence = f"{_fullwidth(first)} {rest}"
    elif variant == 2:  # full-width full stop in the post
        item.text = item.text[:-1] + "\uff0e"
    else:               # full-width wave dash in the post, ASCII tilde in the annotation
        item.text = item.text[:-1] + "\uff5e"
        row.sentence = row.sentence[:-1] + "~"


def _plant_quirks(rng: random.Random, posts: list[_Post], counts: dict[str, int]) -> None:
    """Plant the row-level quirks on short annotated posts, each sentence used once."""
    n = len(posts)
    short = [p for p in posts if p.items and not p.long]
    positives = [(p, it) for p in short for it in p.items if it.rows[0].status == 1]
    rng.shuffle(positives)
    sleepers = [(p, it) for p, it in positives if it.rows[0].symptom == "SLEEP_ISSUES"]
    if not sleepers:  # tiny runs: make one sleep sentence to misspell
        t = txt.POSITIVE["SLEEP_ISSUES"][0]
        host = next(p for p in short if all(it.rows[0].symptom != "SLEEP_ISSUES"
                                              for it in p.items))
        host.items.append(_Item(t, [_Row("SLEEP_ISSUES", 1, t)]))
        sleepers = [(host, host.items[-1])]
    _, sleep_item = sleepers[0]
    sleep_item.rows.append(_Row("LEEP_ISSUES", 1, sleep_item.rows[0].sentence,
                                q.UNKNOWN_SYMPTOM))
    counts[q.UNKNOWN_SYMPTOM] = 1
    pool = [(p, it) for p, it in positives if it is not sleep_item]
    n_norm, n_unl, n_mixed = max(6, round(n / 50)), max(2, round(n / 150)), max(4, round(n / 75))
    for k in range(n_norm):
        _perturb(pool.pop()[1], k % 4)
    for k in range(n_unl):
        pool.pop()[1].rows[0].sentence = txt.UNLOCATABLE[k % len(txt.UNLOCATABLE)]
    mixed: set[tuple[str, str]] = set()
    while len(mixed) < n_mixed:
        post, item = pool.pop()
        s = item.rows[0].symptom
        if (post.post_id, s) in mixed:
            continue
        mixed.add((post.post_id, s))
        t = rng.choice(txt.NEGATIVE[s])
        post.items.append(_Item(t, [_Row(s, 0, t)]))
    for k in range(max(2, round(n / 60))):
        post = short[(k * 7) % len(short)]
        t = txt.SPECIAL[k % len(txt.SPECIAL)]
        if all(it.text != t for it in post.items):
            post.items.append(_Item(t, [_Row(SPECIAL_CASE, 1, t)]))
            counts[q.SPECIAL_CASE_ROWS] += 1
    counts.update({q.NORMALIZED_MATCH: n_norm, q.UNLOCATABLE_EVIDENCE: n_unl,
                   q.MIXED_STATUS_PAIRS: n_mixed})
    counts[q.DUPLICATE_PAIR_ROWS] += n_mixed


def _fillers(rng: random.Random, min_tokens: int) -> list[_Item]:
    out: list[_Item] = []
    tokens = 0
    while tokens < min_tokens:
        sentence = rng.choice(txt.FILLER)
        tokens += token_offset(sentence, len(sentence))
        out.append(_Item(sentence))
    return out


def _layout(rng: random.Random, post: _Post, counts: dict[str, int]) -> None:
    """Order a post's sentences; long posts put evidence after >= 700 filler tokens."""
    early = [_Item(t) for t in rng.sample(txt.FILLER, rng.randint(1, 6))]
    if rng.random() < 0.2:
        early.insert(0, _Item(rng.choice(txt.OPENERS)))
    late: list[_Item] = []
    for item in post.items:
        keep_early = not post.long or (not late and rng.random() < 0.3)
        (early if keep_early else late).append(item)
    rng.shuffle(early)
    if post.long:
        # A few posts run to a couple of thousand words (the longest real ones reach 7,000;
        # longer here would only slow every CPU test that trains on the sample).
        size = rng.choice((600, 700, 800, 1000, 1200, 1600, 2500))
        block = _fillers(rng, size)
        for item in late:
            item.late = True
            counts[q.EVIDENCE_BEYOND_512] += sum(r.status == 1 for r in item.rows)
        tail = late + _fillers(rng, 60)
        rng.shuffle(tail)
        early += block + tail
    post.items = early


def _join(rng: random.Random, items: list[_Item]) -> str:
    parts = [items[0].text]
    for item in items[1:]:
        parts.append("\n\n" if rng.random() < 0.12 else " ")
        parts.append(item.text)
    return "".join(parts)


def _csv_text(header: list[str], rows: list[list[str]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def _tables(rng: random.Random, posts: list[_Post]
            ) -> tuple[list[list[str]], list[list[str]], dict[str, list[int]]]:
    """Posts rows, annotation rows, and the 1-based annotation rows of each tagged kind."""
    post_rows, ann_rows = [], []
    tagged: dict[str, list[int]] = {HARD_NEGATIVE_KIND: [], q.UNKNOWN_SYMPTOM: []}
    for post in posts:
        items = post.items or [_Item(t) for t in rng.sample(txt.FILLER, rng.randint(3, 8))]
        post_rows.append([post.post_id, _join(rng, items)])
        for k, item in enumerate(items):
            for row in item.rows:
                why = "explicit denial" if row.status == 0 else "evidence"
                ann_rows.append([post.post_id, f"{post.post_id}_{k}", row.sentence,
                                 row.symptom, str(row.status), f"{why} of {row.symptom}"])
                if row.kind:
                    tagged[row.kind].append(len(ann_rows))
    return post_rows, ann_rows, tagged


def write_synthetic(out_dir: Path, *, n_posts: int = 300, seed: int = 0) -> SynthManifest:
    """Write ``redsm5_posts.csv``, ``redsm5_annotations.csv`` and ``manifest.json``.

    Deterministic for a given (n_posts, seed). Files are replaced atomically. Needs
    ``n_posts >= 20`` so every quirk has room.

    Raises:
        ValueError: ``n_posts`` is below 20 (the CLI checks this first).
    """
    if n_posts < 20:
        raise ValueError(f"n_posts is {n_posts}, but must be >= 20")
    rng = random.Random(seed)
    counts = {name: 0 for name in q.QUIRK_NAMES}
    n_unannotated = max(2, round(n_posts / 100))
    counts[q.UNANNOTATED_POSTS] = n_unannotated
    posts = _plan(rng, n_posts, n_unannotated, counts)
    _plant_quirks(rng, posts, counts)
    for post in posts:
        if post.items:
            _layout(rng, post, counts)
    rng.shuffle(posts)
    post_rows, ann_rows, tagged = _tables(rng, posts)
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_atomic(out_dir / POSTS_FILE, _csv_text(list(POSTS_COLUMNS), post_rows))
    _write_atomic(out_dir / ANNOTATIONS_FILE, _csv_text(list(ANNOTATION_COLUMNS), ann_rows))
    manifest = SynthManifest(seed, n_posts, len(ann_rows), counts,
                             hard_negatives=len(tagged[HARD_NEGATIVE_KIND]),
                             planted_rows={q.UNKNOWN_SYMPTOM: tagged[q.UNKNOWN_SYMPTOM]})
    _write_atomic(out_dir / MANIFEST_FILE, json.dumps(asdict(manifest), indent=2) + "\n")
    return manifest


def replace_with_synthetic(out_dir: Path, *, n_posts: int = 300,
                           seed: int = 0) -> SynthManifest:
    """Make ``out_dir`` hold exactly the files of :func:`write_synthetic`, nothing else.

    The files are written into a new sibling folder that is then renamed into place, so
    nothing of an old ``out_dir`` survives (no splits file made for other data), and a
    failure before the swap leaves the old folder as it was.

    Raises:
        DataError: the parent folder cannot be written.
    """
    target = Path(out_dir).resolve()  # `--out .` has no name to build siblings from
    tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    new, old = (target.with_name(f".{target.name}.{kind}-{tag}") for kind in ("new", "old"))
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        new.mkdir()  # mkdir, unlike mkdtemp, keeps the umask's permissions for the result
        manifest = write_synthetic(new, n_posts=n_posts, seed=seed)
        if target.exists():
            target.rename(old)
        try:
            new.rename(target)
        except OSError:
            if old.exists():
                old.rename(target)
            raise
    except OSError as exc:
        raise DataError(f"{out_dir}: cannot write the synthetic data ({exc.strerror or exc})",
                        f"make {Path(out_dir).parent} writable") from None
    finally:
        shutil.rmtree(new, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)
    return manifest
