"""Post-level train/val/test splits, stratified on each post's symptom profile.

A post's profile is its set of present symptoms (the nine criteria). Posts are assigned by
iterative stratification: the rarest symptom first, each post to the split that most lacks
that symptom, so every split's per-symptom prevalence tracks the whole. Posts, never rows,
are split, so no sentence of a post can leak across splits.

The splits file is written once (atomically) and reused while its data hash, seed and
ratios match; its ``hash`` covers the data hash, seed, ratios and the assignment itself.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from psy_agents.data.load import write_text_atomic
from psy_agents.errors import DataError

VERSION = 1
SPLITS = ("train", "val", "test")
_RATIO_EXAMPLE = "pass three positive numbers summing to 1, e.g. --ratios 0.7,0.15,0.15"


def check_ratios(ratios: Sequence[float]) -> tuple[float, float, float]:
    """Return ``ratios`` as a 3-tuple of floats.

    Raises:
        DataError: not three values, a value <= 0, or a sum other than 1 (within 1e-6).
    """
    shown = ",".join(f"{r:g}" for r in ratios)
    if len(ratios) != 3:
        raise DataError(f"--ratios {shown}: {len(ratios)} values given, but train,val,test "
                        "needs 3", _RATIO_EXAMPLE)
    if any(not r > 0 for r in ratios):
        raise DataError(f"--ratios {shown}: every ratio must be > 0", _RATIO_EXAMPLE)
    total = math.fsum(ratios)
    if abs(total - 1.0) > 1e-6:
        raise DataError(f"--ratios {shown}: the ratios sum to {total:g}, but must sum to 1",
                        _RATIO_EXAMPLE)
    return (float(ratios[0]), float(ratios[1]), float(ratios[2]))


def _sizes(n: int, ratios: Sequence[float]) -> list[int]:
    sizes = [round(r * n) for r in ratios[1:]]
    return [n - sum(sizes), *sizes]


def _pick(post_labels: frozenset[str], need: list[int], label_need: Mapping[str, list[float]],
          label: str | None, rng: random.Random) -> int:
    """The split a post goes to: most need for ``label``, then most room, then chance."""
    open_splits = [k for k in range(len(need)) if need[k] > 0] or list(range(len(need)))
    def score(k: int) -> tuple[float, int, float]:
        return (label_need[label][k] if label else 0.0, need[k], rng.random())
    return max(open_splits, key=score)


def assign_splits(profiles: Mapping[str, frozenset[str]], symptoms: Sequence[str],
                  ratios: Sequence[float], seed: int) -> dict[str, list[str]]:
    """Iteratively stratified assignment of posts to train/val/test.

    Deterministic for equal inputs; split sizes are exactly ``round(ratio * n)`` (train
    takes the rounding remainder). Each split's list is sorted.
    """
    rng = random.Random(seed)
    order = sorted(profiles)
    rng.shuffle(order)
    need = _sizes(len(order), ratios)
    counts = {s: sum(s in profiles[p] for p in order) for s in symptoms}
    label_need = {s: [r * counts[s] for r in ratios] for s in symptoms}
    remaining = dict.fromkeys(order)
    out: dict[str, list[str]] = {name: [] for name in SPLITS}
    while True:
        left = {s: sum(1 for p in remaining if s in profiles[p]) for s in symptoms}
        live = [s for s in symptoms if left[s]]
        if not live:
            break
        rarest = min(live, key=lambda s: (left[s], symptoms.index(s)))
        for post in [p for p in remaining if rarest in profiles[p]]:
            k = _pick(profiles[post], need, label_need, rarest, rng)
            out[SPLITS[k]].append(post)
            need[k] -= 1
            for s in profiles[post]:
                if s in label_need:
                    label_need[s][k] -= 1
            del remaining[post]
    for post in list(remaining):
        k = _pick(frozenset(), need, label_need, None, rng)
        out[SPLITS[k]].append(post)
        need[k] -= 1
    _refine(out, profiles, symptoms)
    return {name: sorted(ids) for name, ids in out.items()}


def _swap_gain(ck: list[float], cj: list[float], a: tuple[int, ...], b: tuple[int, ...],
               nk: int, nj: int) -> float:
    """Cost drop when a post of profile ``a`` (split k) swaps with one of ``b`` (split j)."""
    gain = 0.0
    for s in range(len(ck)):
        d = b[s] - a[s]
        if d:
            gain += (ck[s] ** 2 - (ck[s] + d) ** 2) / nk**2
            gain += (cj[s] ** 2 - (cj[s] - d) ** 2) / nj**2
    return gain


def _refine(out: dict[str, list[str]], profiles: Mapping[str, frozenset[str]],
            symptoms: Sequence[str], max_swaps: int = 500) -> None:
    """Swap posts between splits while that lowers sum((count - target) / size)^2.

    Iterative stratification alone can overshoot a common symptom that co-occurs with the
    rarer ones it placed first; best-improvement swaps of whole profiles repair that while
    keeping split sizes fixed. Deterministic: ties go to the first candidate in sorted order.
    """
    vec = {p: tuple(int(s in profiles[p]) for s in symptoms) for p in profiles}
    n_all = len(profiles)
    prevalence = [sum(v[i] for v in vec.values()) / n_all for i in range(len(symptoms))]
    # Per split: count minus target for each symptom (what the cost squares).
    dev = {name: [sum(vec[p][i] for p in ids) - prevalence[i] * len(ids)
                  for i in range(len(symptoms))] for name, ids in out.items()}
    for _ in range(max_swaps):
        best = (1e-12, None)
        groups = {name: {} for name in out}
        for name, ids in out.items():
            for p in sorted(ids):
                groups[name].setdefault(vec[p], p)
        for ki, k in enumerate(SPLITS):
            for j in SPLITS[ki + 1:]:
                nk, nj = len(out[k]), len(out[j])
                for a, pa in groups[k].items():
                    for b, pb in groups[j].items():
                        gain = _swap_gain(dev[k], dev[j], a, b, nk, nj)
                        if gain > best[0]:
                            best = (gain, (k, pa, j, pb))
        if best[1] is None:
            return
        k, pa, j, pb = best[1]
        out[k][out[k].index(pa)] = pb
        out[j][out[j].index(pb)] = pa
        for i in range(len(symptoms)):
            d = vec[pb][i] - vec[pa][i]
            dev[k][i] += d
            dev[j][i] -= d


def split_hash(body: Mapping[str, Any]) -> str:
    """sha256 over the canonical JSON of version, seed, ratios, data hash and assignment."""
    keys = ("version", "seed", "ratios", "data_hash", *SPLITS)
    canon = json.dumps({k: body[k] for k in keys}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canon.encode()).hexdigest()


def make_splits(profiles: Mapping[str, frozenset[str]], symptoms: Sequence[str], *,
                data_hash: str, seed: int, ratios: Sequence[float]) -> dict[str, Any]:
    """The splits-file body (including its ``hash``) for these posts."""
    ratios = check_ratios(ratios)
    body: dict[str, Any] = {"version": VERSION, "seed": seed, "ratios": list(ratios),
                            "data_hash": data_hash}
    body.update(assign_splits(profiles, symptoms, ratios, seed))
    body["hash"] = split_hash(body)
    return body


def read_splits(path: Path, rewrite_hint: str | None = None) -> dict[str, Any]:
    """Read and check a splits file (structure and its own hash).

    Args:
        rewrite_hint: how the calling command rewrites the file (e.g. "pass --force to
            rewrite it"); the fix of every error says to delete the file or do this.

    Raises:
        DataError: unreadable, not JSON, a missing or ill-typed key, or a hash that does not
            match the content (the file was edited).
    """
    fix = _fix(path, rewrite_hint)
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read the splits file ({exc})", fix) from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path} line {exc.lineno}: the splits file is not valid JSON "
                        f"({exc.msg})", fix) from None
    if not isinstance(body, dict):
        raise DataError(f"{path}: the splits file is not a JSON object", fix)
    types = {"version": int, "seed": int, "ratios": list, "data_hash": str, "hash": str,
             "train": list, "val": list, "test": list}
    for key, tp in types.items():
        if not isinstance(body.get(key), tp):
            raise DataError(f"{path}, key {key}: missing or not a {tp.__name__}", fix)
    if body["version"] != VERSION:
        raise DataError(f"{path}, key version: {body['version']} is not {VERSION}", fix)
    if split_hash(body) != body["hash"]:
        raise DataError(f"{path}, key hash: does not match the file's content (edited?)", fix)
    return body


def _fix(path: Path, rewrite_hint: str | None) -> str:
    """The fix of every splits-file error: delete it (it is made again on next use), or
    rewrite it the way the calling command can. The hint comes from the caller because
    only the caller knows its own flags (``data split`` has ``--force``, ``stats`` not)."""
    return f"delete {path}" + (f" or {rewrite_hint}" if rewrite_hint else "")


def write_splits(path: Path, body: Mapping[str, Any]) -> None:
    """Write ``body`` to ``path`` atomically (temp file + rename in the same folder)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, json.dumps(body, indent=1) + "\n")
    except OSError as exc:
        raise DataError(f"{path}: cannot write the splits file ({exc.strerror})",
                        f"make {path.parent} writable") from None


def ensure_splits(path: Path, profiles: Mapping[str, frozenset[str]], symptoms: Sequence[str],
                  *, data_hash: str, seed: int, ratios: Sequence[float], force: bool = False,
                  write: bool = True, rewrite_hint: str | None = None) -> dict[str, Any]:
    """Reuse the splits file at ``path`` if it matches, else make the splits and (if
    ``write``) write them there.

    Idempotent: a second call with the same arguments reads the file and writes nothing.
    With ``write`` False it never writes: a missing file (or ``force``) gives splits made in
    memory, the same ones a write would have saved.

    Args:
        rewrite_hint: the caller's way to rewrite the file, named in every error's fix
            (see :func:`read_splits`).

    Raises:
        DataError: bad ratios; an unreadable file; a file made for other data, seed or
            ratios (unless ``force``, which rewrites it); a file whose posts differ.
    """
    ratios = check_ratios(ratios)
    if path.exists() and not force:
        body = read_splits(path, rewrite_hint)
        wanted = {"data_hash": data_hash, "seed": seed, "ratios": list(ratios)}
        for key, value in wanted.items():
            if body[key] != value:
                raise DataError(f"{path}, key {key}: the file was made with {body[key]!r}, "
                                f"this run has {value!r}", _fix(path, rewrite_hint))
        listed = [p for name in SPLITS for p in body[name]]
        if len(listed) != len(set(listed)) or set(listed) != set(profiles):
            raise DataError(f"{path}: its posts do not match the data", _fix(path, rewrite_hint))
        return body
    body = make_splits(profiles, symptoms, data_hash=data_hash, seed=seed, ratios=ratios)
    if write:
        write_splits(path, body)
    return body
