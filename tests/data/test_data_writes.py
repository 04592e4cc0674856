"""What the data commands write: `stats` nothing, `synth` a whole folder and only with
--force over an existing one.

Seen once: `data stats --splits /missing.json` created that file, and `data synth` over
data/sample kept the old splits-13.json, after which split, stats and train failed on a
data-hash mismatch.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import psy_agents.data.synth as synth
from psy_agents.data.prepare import prepare_data
from psy_agents.data.splits import read_splits

SPLIT_CMD = "launch data split --data-dir {d} --seed 13 --ratios 0.7,0.15,0.15"


def test_stats_with_a_missing_splits_file_is_one_error_and_creates_nothing(
        data_copy, tmp_path, launch, snapshot):
    missing = tmp_path / "missing.json"
    before = snapshot(tmp_path)
    result = launch("data", "stats", "--data-dir", data_copy, "--splits", missing)
    assert result.exit_code == 2
    assert result.stderr == (f"error: {missing}: no such splits file — write it with "
                             f"`{SPLIT_CMD.format(d=data_copy)} --out {missing}` or omit "
                             "--splits\n")
    assert result.stdout == ""
    assert not missing.exists() and snapshot(tmp_path) == before


@pytest.mark.parametrize("as_json", [False, True])
def test_stats_without_a_splits_file_splits_in_memory_and_says_so(as_json, data_copy, launch,
                                                                  snapshot):
    before = snapshot(data_copy)
    result = launch("data", "stats", "--data-dir", data_copy, *(["--json"] if as_json else []))
    assert result.exit_code == 0, result.output
    assert result.stderr == ("note: no splits file yet; this split was made in memory and not "
                             f"saved — save it with `{SPLIT_CMD.format(d=data_copy)}`\n")
    assert snapshot(data_copy) == before
    # The split shown is the one `data split` then saves.
    assert launch("data", "split", "--data-dir", data_copy).exit_code == 0
    saved = read_splits(data_copy / "splits-13.json")
    if as_json:
        shown = json.loads(result.stdout)
        assert shown["split_hash"] == saved["hash"] and shown["splits_file"] is None
        assert sum(shown["splits"]["val"]["DEPRESSED_MOOD"].values()) > 0
    else:
        assert result.stdout.startswith(f"split hash {saved['hash'][:12]}  ")
    again = launch("data", "stats", "--data-dir", data_copy)
    assert again.exit_code == 0 and again.stderr == ""


def test_a_read_only_call_does_not_stop_a_later_writing_call_from_writing(data_copy):
    shown = prepare_data(data_copy, seed=21, write=False)
    assert shown.splits_file is None and not (data_copy / "splits-21.json").exists()
    made = prepare_data(data_copy, seed=21)
    assert made.splits_file == data_copy / "splits-21.json"
    assert read_splits(made.splits_file)["hash"] == made.split_hash == shown.split_hash


def _synth(launch, out: Path, *args: str):
    return launch("data", "synth", "--out", out, "--n-posts", "40", *args)


def test_synth_refuses_a_non_empty_folder_without_force(tmp_path, launch, snapshot):
    out = tmp_path / "s"
    out.mkdir()
    assert _synth(launch, out).exit_code == 0  # an empty folder is no loss
    before = snapshot(tmp_path)
    result = _synth(launch, out, "--seed", "1")
    assert result.exit_code == 2
    assert result.stderr == (f"error: {out}: the folder exists and is not empty — pass --force "
                             "to replace all of it, or another --out\n")
    assert snapshot(tmp_path) == before


def test_synth_force_replaces_the_folder_whole(tmp_path, launch):
    out = tmp_path / "s"
    assert _synth(launch, out).exit_code == 0
    assert launch("data", "split", "--data-dir", out).exit_code == 0
    (out / "notes.txt").write_text("mine")
    result = _synth(launch, out, "--seed", "1", "--force")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "redsm5_annotations.csv",
                                                    "redsm5_posts.csv"]
    assert json.loads((out / "manifest.json").read_text())["seed"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["s"]  # no temporary sibling left
    for command in ("split", "stats"):  # no stale splits file to trip over
        assert launch("data", command, "--data-dir", out).exit_code == 0


def test_synth_failing_midway_leaves_the_old_folder_as_it_was(tmp_path, launch, snapshot,
                                                              monkeypatch):
    out = tmp_path / "s"
    assert _synth(launch, out).exit_code == 0
    before = snapshot(tmp_path)
    real = synth._write_atomic

    def write_then_fail(path: Path, text: str) -> None:
        if path.name == synth.MANIFEST_FILE:
            raise OSError(28, "No space left on device")
        real(path, text)

    monkeypatch.setattr(synth, "_write_atomic", write_then_fail)
    result = _synth(launch, out, "--seed", "1", "--force")
    assert result.exit_code == 2
    assert result.stderr == (f"error: {out}: cannot write the synthetic data (No space left on "
                             f"device) — make {tmp_path} writable\n")
    assert snapshot(tmp_path) == before
    assert [p.name for p in tmp_path.iterdir()] == ["s"]
