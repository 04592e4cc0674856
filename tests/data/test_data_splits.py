"""Post-level stratified splits: disjoint, balanced, seeded, written once, reused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from psy_agents.data.criteria import SYMPTOMS
from psy_agents.data.prepare import prepare_data, profiles_of
from psy_agents.data.splits import SPLITS, ensure_splits, read_splits
from psy_agents.data.synth import write_synthetic
from psy_agents.data.validate import load_dataset
from psy_agents.errors import DataError


def _max_prevalence_gap(folder: Path, body: dict) -> float:
    profiles = profiles_of(load_dataset(folder))
    worst = 0.0
    for s in SYMPTOMS:
        whole = sum(s in p for p in profiles.values()) / len(profiles)
        for name in SPLITS:
            ids = body[name]
            worst = max(worst, abs(sum(s in profiles[p] for p in ids) / len(ids) - whole))
    return worst


def _split(folder: Path, launch, *args: str) -> dict:
    out = folder / "splits.json"
    result = launch("data", "split", "--data-dir", folder, "--out", out, *args)
    assert result.exit_code == 0, result.output
    return json.loads(out.read_text())


def test_no_post_in_two_splits_and_every_post_in_one(data_copy, launch):
    body = _split(data_copy, launch)
    ids = [p for name in SPLITS for p in body[name]]
    posts = load_dataset(data_copy).posts
    assert len(ids) == len(set(ids)) == len(posts) and set(ids) == set(posts)
    assert [len(body[n]) for n in SPLITS] == [210, 45, 45]


@pytest.mark.parametrize("seed", [0, 1, 13, 99])
def test_sample_prevalence_within_3_points(seed, data_copy, launch):
    assert _max_prevalence_gap(data_copy, _split(data_copy, launch, "--seed", str(seed))) <= 0.03


def test_full_size_synth_prevalence_within_3_points(tmp_path, launch):
    write_synthetic(tmp_path, n_posts=1484, seed=5)
    body = _split(tmp_path, launch, "--seed", "7")
    assert [len(body[n]) for n in SPLITS] == [1038, 223, 223]
    assert _max_prevalence_gap(tmp_path, body) <= 0.03


def test_same_seed_same_file_other_seed_other_split(tmp_path, data_copy, launch):
    a = data_copy / "a.json"
    b = data_copy / "b.json"
    c = data_copy / "c.json"
    for out, seed in ((a, "3"), (b, "3"), (c, "4")):
        assert launch("data", "split", "--data-dir", data_copy, "--seed", seed,
                      "--out", out).exit_code == 0
    assert a.read_bytes() == b.read_bytes()
    body_a, body_c = json.loads(a.read_text()), json.loads(c.read_text())
    assert body_a["hash"] != body_c["hash"] and body_a["test"] != body_c["test"]
    assert body_a["data_hash"] == body_c["data_hash"]
    assert set(body_a) == {"version", "seed", "ratios", "data_hash", "hash", *SPLITS}


def test_file_is_reused_and_mismatch_needs_force(data_copy, launch):
    out = data_copy / "s.json"
    first = launch("data", "split", "--data-dir", data_copy, "--out", out)
    stamp = out.stat().st_mtime_ns
    again = launch("data", "split", "--data-dir", data_copy, "--out", out)
    assert again.stdout == first.stdout and out.stat().st_mtime_ns == stamp
    other = launch("data", "split", "--data-dir", data_copy, "--out", out, "--seed", "5")
    assert other.exit_code == 2
    assert other.stderr.strip() == (
        f"error: {out}, key seed: the file was made with 13, this run has 5 — delete {out} or "
        "pass --force to rewrite it")
    forced = launch("data", "split", "--data-dir", data_copy, "--out", out, "--seed", "5",
                    "--force")
    assert forced.exit_code == 0 and json.loads(out.read_text())["seed"] == 5


def test_edited_data_or_splits_file_is_rejected(data_copy, launch):
    out = data_copy / "s.json"
    launch("data", "split", "--data-dir", data_copy, "--out", out)
    body = json.loads(out.read_text())
    body["val"], body["test"] = body["test"], body["val"]
    out.write_text(json.dumps(body))
    with pytest.raises(DataError, match="key hash: does not match the file's content"):
        read_splits(out)
    launch("data", "split", "--data-dir", data_copy, "--out", out, "--force")
    posts = data_copy / "redsm5_posts.csv"
    posts.write_text(posts.read_text() + "s_1_11,One more post.\n")
    result = launch("data", "split", "--data-dir", data_copy, "--out", out)
    assert result.exit_code == 2 and "key data_hash: the file was made with" in result.stderr


def test_ensure_splits_rejects_posts_that_differ(data_copy):
    ds = load_dataset(data_copy)
    profiles = profiles_of(ds)
    out = data_copy / "s.json"
    ensure_splits(out, profiles, SYMPTOMS, data_hash=ds.data_hash, seed=1, ratios=(0.7, 0.15, 0.15))
    fewer = dict(list(profiles.items())[1:])
    with pytest.raises(DataError, match="its posts do not match the data"):
        ensure_splits(out, fewer, SYMPTOMS, data_hash=ds.data_hash, seed=1,
                      ratios=(0.7, 0.15, 0.15))


def test_prepare_data_contract(data_copy):
    data = prepare_data(data_copy, seed=2)
    assert (data_copy / "splits-2.json").exists()
    body = read_splits(data_copy / "splits-2.json")
    assert data.split_hash == body["hash"] and data.symptoms == SYMPTOMS
    for name in SPLITS:
        pairs = data.split(name)
        assert len(pairs) == 9 * len(body[name])
        assert {p.post_id for p in pairs} == set(body[name])
    assert prepare_data(data_copy, seed=2) is data
    with_special = prepare_data(data_copy, seed=2, include_special_case=True)
    assert with_special.symptoms[-1] == "SPECIAL_CASE" and with_special.split_hash == data.split_hash
    with pytest.raises(DataError, match="split 'dev' does not exist"):
        data.split("dev")


def test_read_only_data_dir_puts_splits_under_runs(data_copy, tmp_path, monkeypatch):
    import psy_agents.data.prepare as prepare

    # Root ignores directory permissions, so simulate a read-only data dir at the check.
    monkeypatch.setattr(prepare.os, "access", lambda path, mode: False)
    monkeypatch.chdir(tmp_path)
    data = prepare.prepare_data(data_copy, seed=4)
    [made] = (tmp_path / "runs" / "splits").glob("*-splits-4.json")
    assert made.name == f"{data.data_hash[:12]}-splits-4.json"
    assert not (data_copy / "splits-4.json").exists()
    assert read_splits(made)["hash"] == data.split_hash
    # A worker names its own runs folder (a read-only data volume on a cluster).
    worker_runs = tmp_path / "checkpoints"
    again = prepare.prepare_data(data_copy, seed=4, fallback_splits_dir=worker_runs / "splits")
    [theirs] = (worker_runs / "splits").glob("*-splits-4.json")
    assert read_splits(theirs)["hash"] == again.split_hash == data.split_hash


def test_prepare_data_strict_and_bad_ratios_write_nothing(data_copy, snapshot):
    before = snapshot(data_copy)
    with pytest.raises(DataError, match="--strict"):
        prepare_data(data_copy, strict=True)
    with pytest.raises(DataError, match="the ratios sum to 0.9"):
        prepare_data(data_copy, ratios=(0.7, 0.1, 0.1))
    assert snapshot(data_copy) == before
