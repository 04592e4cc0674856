"""One call from a data directory to train/val/test pairs: ``prepare_data``.

Loads and validates the CSV files, builds 9 pairs per post, splits by post (creating the
splits file once, unless the caller only reads) and returns the pairs per split. Results
are cached in-process, so the many trials of one worker share one object.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from psy_agents.data.criteria import SYMPTOMS
from psy_agents.data.load import ANNOTATIONS_FILE, POSTS_FILE
from psy_agents.data.pairs import Pair
from psy_agents.data.splits import SPLITS, check_ratios, ensure_splits
from psy_agents.data.validate import Dataset, load_dataset
from psy_agents.errors import DataError

FALLBACK_SPLITS_DIR = Path("runs") / "splits"


@dataclass(frozen=True)
class PreparedData:
    """Pairs per split plus the hashes a study records."""

    train: tuple[Pair, ...]
    val: tuple[Pair, ...]
    test: tuple[Pair, ...]
    data_hash: str
    split_hash: str
    symptoms: tuple[str, ...]
    # The splits file the split was read from or written to; None when it was made in
    # memory and saved nowhere (a read-only caller and no file yet).
    splits_file: Path | None = None

    def split(self, name: str) -> tuple[Pair, ...]:
        """The pairs of split ``name`` (train, val or test).

        Raises:
            DataError: ``name`` is not a split.
        """
        if name not in SPLITS:
            raise DataError(f"split {name!r} does not exist", f"use one of {', '.join(SPLITS)}")
        return getattr(self, name)


def profiles_of(dataset: Dataset) -> dict[str, frozenset[str]]:
    """Each post's set of present criteria (SPECIAL_CASE never counts)."""
    present: dict[str, set[str]] = {p: set() for p in dataset.posts}
    for pair in dataset.pairs:
        if pair.label and pair.symptom in SYMPTOMS:
            present[pair.post_id].add(pair.symptom)
    return {p: frozenset(s) for p, s in present.items()}


def default_splits_path(data_dir: Path, seed: int, data_hash: str,
                        fallback_dir: Path = FALLBACK_SPLITS_DIR) -> Path:
    """``<data_dir>/splits-<seed>.json``, or under ``fallback_dir`` (keyed by the data hash)
    if the data folder is read-only (a read-only volume on a cluster)."""
    if os.access(data_dir, os.W_OK):
        return data_dir / f"splits-{seed}.json"
    return Path(fallback_dir) / f"{data_hash[:12]}-splits-{seed}.json"


# key -> (prepared, splits path, its stamp then): an entry holds while the data files and
# the splits file are unchanged (a splits file written or rewritten since is read anew).
_CACHE: dict[tuple, tuple[PreparedData, Path, tuple[int, int] | None]] = {}


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size)


def _cache_key(data_dir: Path, splits_path: Path | None, *args) -> tuple:
    stamp = tuple(_stamp(data_dir / name) for name in (POSTS_FILE, ANNOTATIONS_FILE))
    where = splits_path.resolve() if splits_path else None
    return (data_dir.resolve(), where, *args, stamp)


def split_command(data_dir: Path, seed: int, ratios: tuple[float, float, float]) -> str:
    """The ``launch data split`` command that makes the split ``prepare_data`` uses for
    these arguments (a caller appends ``--out``/``--force`` as it needs)."""
    shown = ",".join(f"{r:g}" for r in ratios)
    return f"launch data split --data-dir {data_dir} --seed {seed} --ratios {shown}"


def rewrite_hint(data_dir: Path, path: Path, seed: int,
                 ratios: tuple[float, float, float]) -> str:
    """How any command rewrites the splits file ``path`` as ``prepare_data`` wants it."""
    return f"rewrite it with `{split_command(data_dir, seed, ratios)} --out {path} --force`"


def prepare_data(data_dir: Path, *, splits_path: Path | None = None, seed: int = 13,
                 ratios: tuple[float, float, float] = (0.7, 0.15, 0.15),
                 include_special_case: bool = False, strict: bool = False,
                 fallback_splits_dir: Path = FALLBACK_SPLITS_DIR,
                 write: bool = True) -> PreparedData:
    """Validated pairs of ``data_dir`` split by post.

    Creates the splits file (``splits_path``, else :func:`default_splits_path`, which uses
    ``fallback_splits_dir`` when ``data_dir`` is read-only) on first use
    and reuses it afterwards. With ``write`` False nothing is written: a missing splits file
    gives the same split made in memory (``splits_file`` is then None). Cached in-process:
    the same arguments on unchanged files return the same object.

    Raises:
        DataError: unusable data (see :func:`load_dataset`), bad ratios, or a splits file
            that cannot be read or was made for other data, seed or ratios.
    """
    ratios = check_ratios(ratios)
    data_dir = Path(data_dir)
    key = _cache_key(data_dir, splits_path, seed, ratios, include_special_case, strict, write,
                     Path(fallback_splits_dir).resolve())
    if key in _CACHE and _stamp(_CACHE[key][1]) == _CACHE[key][2]:
        return _CACHE[key][0]
    dataset = load_dataset(data_dir, include_special_case=include_special_case, strict=strict)
    path = splits_path or default_splits_path(data_dir, seed, dataset.data_hash,
                                              fallback_splits_dir)
    saved = write or path.exists()
    body = ensure_splits(path, profiles_of(dataset), SYMPTOMS, data_hash=dataset.data_hash,
                         seed=seed, ratios=ratios, write=write,
                         rewrite_hint=rewrite_hint(data_dir, path, seed, ratios))
    where = {post: name for name in SPLITS for post in body[name]}
    grouped: dict[str, list[Pair]] = {name: [] for name in SPLITS}
    for pair in dataset.pairs:
        grouped[where[pair.post_id]].append(pair)
    prepared = PreparedData(*(tuple(grouped[name]) for name in SPLITS),
                            data_hash=dataset.data_hash, split_hash=body["hash"],
                            symptoms=dataset.symptoms, splits_file=path if saved else None)
    _CACHE[key] = (prepared, path, _stamp(path))
    return prepared
