"""Bad input, fuzzed: malformed CSVs, backend profiles and stage plans.

Contract: a malformed input ends in the project's own error (DataError / ConfigError: one
line, exit 2) or loads — never another exception, and a failed data load leaves no partly
written (or any new) splits file behind. Examples are bounded so the file runs in well
under a minute; the data cases start from a 25-post slice of data/sample.

The hypothesis cases call the loaders in-process; the CLI cases at the end run `launch hpo`
(bad profile, stage plan or CSV) and `launch data validate/split` as subprocesses: exit 2,
one line on stderr, no traceback, and no file created (no runs/optuna.db, no splits file).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from psy_agents.backends.options import LocalOptions
from psy_agents.backends.registry import load_options
from psy_agents.data.load import ANNOTATIONS_FILE, POSTS_FILE
from psy_agents.data.prepare import prepare_data
from psy_agents.errors import ConfigError, DataError
from psy_agents.hpo.stages import load_plan
from tests.reliability.helpers import REPO, run_launch

SAMPLE = REPO / "data" / "sample"
FUZZ = settings(max_examples=60, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])


def _slice(n_posts: int = 25) -> tuple[str, str]:
    """The first posts of the sample and their annotations, as CSV text."""
    posts = list(csv.DictReader(io.StringIO((SAMPLE / POSTS_FILE).read_text())))[:n_posts]
    keep = {p["post_id"] for p in posts}
    anns = [a for a in csv.DictReader(io.StringIO((SAMPLE / ANNOTATIONS_FILE).read_text()))
            if a["post_id"] in keep]
    return _to_csv(posts), _to_csv(anns)


def _to_csv(rows: list[dict]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


POSTS, ANNOTATIONS = _slice()


def _load(posts: bytes, annotations: bytes) -> None:
    """prepare_data on the two files in a fresh dir: DataError or success, nothing half-made."""
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        (data_dir / POSTS_FILE).write_bytes(posts)
        (data_dir / ANNOTATIONS_FILE).write_bytes(annotations)
        before = sorted(p.name for p in data_dir.iterdir())
        try:
            prepared = prepare_data(data_dir)
        except DataError as exc:
            event("DataError")
            assert "\n" not in exc.format_message()
            assert sorted(p.name for p in data_dir.iterdir()) == before
            return
        event("loaded")
        splits = [p for p in data_dir.iterdir() if p.name.startswith("splits-")]
        assert len(splits) == 1 and json.loads(splits[0].read_text())["hash"] == prepared.split_hash
        assert [p for p in data_dir.iterdir() if p.name.startswith(".")] == []  # no temp files


@FUZZ
@given(st.binary(max_size=2000), st.sampled_from(["posts", "annotations"]))
def test_random_bytes_in_either_file(blob, which):
    if which == "posts":
        _load(blob, ANNOTATIONS.encode())
    else:
        _load(POSTS.encode(), blob)


@FUZZ
@given(st.sampled_from(["posts", "annotations"]), st.floats(0.0, 1.0),
       st.sampled_from(["truncate", "quote", "drop-column", "newline", "nul"]))
def test_damaged_sample_files(which, where, how):
    posts, anns = POSTS, ANNOTATIONS
    text = posts if which == "posts" else anns
    cut = int(len(text) * where)
    if how == "truncate":
        text = text[:cut]
    elif how == "quote":
        text = text[:cut] + '"' + text[cut:]
    elif how == "newline":
        text = text[:cut] + "\n" + text[cut:]
    elif how == "nul":
        text = text[:cut] + "\x00" + text[cut:]
    else:  # drop one column from the header only
        header, _, rest = text.partition("\n")
        cols = header.split(",")
        cols.pop(int(where * (len(cols) - 1)))
        text = ",".join(cols) + "\n" + rest
    if which == "posts":
        posts = text
    else:
        anns = text
    _load(posts.encode(), anns.encode())


_cell = st.one_of(st.text(max_size=40), st.integers().map(str), st.sampled_from(
    ["", "0", "1", "2", "-1", "1.0", "nan", "DEPRESSED_MOOD", "LEEP_ISSUES", "SPECIAL_CASE",
     '"', '""', "a,b", "x\ny"]))


@FUZZ
@given(st.lists(st.lists(_cell, min_size=6, max_size=6), min_size=1, max_size=12),
       st.booleans())
def test_annotation_rows_with_wrong_values(rows, huge):
    post_ids = [row["post_id"] for row in csv.DictReader(io.StringIO(POSTS))]
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["post_id", "sentence_id", "sentence_text", "DSM5_symptom", "status",
                     "explanation"])
    for i, row in enumerate(rows):
        if i % 2 == 0:  # half the rows name a real post, so checks past the id run too
            row = [post_ids[i % len(post_ids)], *row[1:]]
        if huge and i == 0:
            row = [*row[:2], "x" * 300_000, *row[3:]]
        writer.writerow(row)
    _load(POSTS.encode(), out.getvalue().encode())


_toml_value = st.one_of(st.integers(-5, 10**6), st.booleans(), st.floats(allow_nan=False),
                        st.text(max_size=10), st.lists(st.integers(-3, 3), max_size=3))


def _toml(table: dict) -> str:
    lines = []
    for key, value in table.items():
        if isinstance(value, dict):
            lines.append(f"[{key}]")
            lines += [f"{k} = {json.dumps(v)}" for k, v in value.items()]
        else:
            lines.append(f"{key} = {json.dumps(value)}")
    return "\n".join(lines) + "\n"


def _keys(names):
    return st.sampled_from([*names, "bogus", "time-min", "Max_Restarts"])


@FUZZ
@given(st.sampled_from(["local", "slurm", "k8s"]), st.data())
def test_backend_profiles(backend, data):
    from dataclasses import fields

    from psy_agents.backends.registry import REGISTRY

    names = [f.name for f in fields(REGISTRY[backend].options_cls)]
    table = data.draw(st.dictionaries(_keys(names), _toml_value, max_size=4))
    text = data.draw(st.one_of(st.just(_toml(table)), st.text(max_size=80)))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{backend}.toml"
        path.write_text(text)
        try:
            load_options(backend, profile=path)
        except ConfigError as exc:
            assert "\n" not in exc.format_message()


_STAGE_KEYS = ["trials", "epochs", "patience", "pruner", "train_fraction", "narrow_from",
               "top_k", "margin", "refit_from", "seeds", "trials_per_agent"]


@FUZZ
@given(st.data())
def test_stage_plans(data):
    stage = data.draw(st.dictionaries(_keys(_STAGE_KEYS), _toml_value, max_size=5))
    plan = data.draw(st.sampled_from([["s1"], ["s0", "s1"], ["s1", "s0"], [], [3], "s1"]))
    text = f"[plans]\nx = {json.dumps(plan)}\n" + _toml({"stages.s1": stage})
    text = data.draw(st.one_of(st.just(text), st.just(text[: len(text) // 2])))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "stages.toml"
        path.write_text(text)
        try:
            load_plan("x", path)
        except ConfigError as exc:
            assert "\n" not in exc.format_message()


def test_the_unchanged_slice_loads():  # the fuzz base itself is valid: the cases above bite
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(SAMPLE / POSTS_FILE, tmp)
        (Path(tmp) / POSTS_FILE).write_text(POSTS)
        (Path(tmp) / ANNOTATIONS_FILE).write_text(ANNOTATIONS)
        assert len(prepare_data(Path(tmp)).train) > 0


@pytest.mark.parametrize("text", [
    "", "[plans\n", "[plans]\nx = 'abc'\n", "[plans]\ny = ['s1']\n",
    "plans = 3\n", "[plans]\nx = 3\n", "[plans]\nx = ['s1', 2]\n",
])
def test_stage_plan_edge_cases_are_config_errors(tmp_path, text):
    path = tmp_path / "stages.toml"
    path.write_text(text)
    with pytest.raises(ConfigError):
        load_plan("x", path)


# --- through the CLI ------------------------------------------------------------------

HPO = ["hpo", "--agent", "criteria", "--stage", "s1", "--trials", "1", "--epochs", "1"]


def _files(path: Path) -> list[str]:
    """Every file and folder under ``path`` (an empty ``runs/`` counts as written)."""
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def _one_line_exit_2(args: list[str], cwd: Path) -> str:
    """Run `launch ARGS` (default SQLite storage, so a created study would be a file here);
    check exit 2, one line, no traceback and no new file or folder; return the line."""
    before = _files(cwd)
    out = run_launch(args, cwd=cwd, timeout=120)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "Traceback" not in out.stdout + out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert _files(cwd) == before  # no runs/optuna.db, no splits file, no temp file
    return lines[0]


PROFILE, PLAN = "--backend-profile", "--stages-file"
# The whole list, sorted: a misspelled key is one line that names every valid one.
LOCAL_KEYS = ", ".join(sorted(f.name for f in dataclasses.fields(LocalOptions)))


@pytest.mark.parametrize(("flag", "text", "expected"), [
    pytest.param(PROFILE, b"max_restarts = \n", "invalid TOML", id="profile-syntax"),
    pytest.param(PROFILE, b"max_restart = 3\n",
                 f"unknown key 'max_restart' — valid keys are: {LOCAL_KEYS}",
                 id="profile-unknown-key"),
    pytest.param(PROFILE, b"max_restarts = 'three'\n", "the value of 'max_restarts' is 'three'",
                 id="profile-wrong-type"),
    pytest.param(PROFILE, b"max_restarts = -1\n", "the value of `max_restarts` is -1",
                 id="profile-out-of-range"),
    pytest.param(PROFILE, b"\xff\xfe\x00\x01", "cannot read", id="profile-binary"),
    pytest.param(PLAN, b"[plans\n", "invalid TOML", id="plan-syntax"),
    pytest.param(PLAN, b"[stages.s1]\ntrials = 0\n", "The value of `trials` is 0",
                 id="plan-out-of-range"),
    pytest.param(PLAN, b"[stages.s1]\nepochs = 'x'\n", "the value of 'epochs' is 'x'",
                 id="plan-wrong-type"),
    pytest.param(PLAN, b"[stages.s1]\nbogus = 1\n", "unknown key 'bogus'",
                 id="plan-unknown-key"),
    pytest.param(PLAN, b"[plans]\nmulti = ['s1', 2]\n", "no [stages.s1] table",
                 id="plan-missing-stage"),
    pytest.param(PLAN, b"\xff\xfe\x00\x01", "cannot read", id="plan-binary"),
])
def test_launch_hpo_with_a_malformed_profile_or_stage_plan(tmp_path, flag, text, expected):
    bad = tmp_path / "bad.toml"
    bad.write_bytes(text)
    line = _one_line_exit_2([*HPO, "--objective", "simulated", flag, str(bad)], tmp_path)
    assert expected in line, line
    assert "bad.toml" in line or "max_restarts" in line  # names the file or the key


def _damaged(how: str) -> tuple[bytes, bytes]:
    posts, anns = POSTS.encode(), ANNOTATIONS.encode()
    if how == "not-utf8":
        return b"post_id,text\n\xff\xfe,x\n", anns
    if how == "missing-column":
        return posts, ANNOTATIONS.replace("DSM5_symptom", "symptom", 1).encode()
    if how == "truncated-in-a-quote":
        return posts, anns[: len(anns) // 3]
    return b"", anns  # empty


@pytest.mark.parametrize("how", ["not-utf8", "missing-column", "truncated-in-a-quote", "empty"])
@pytest.mark.parametrize("command", [["data", "validate"], ["data", "split"], HPO],
                         ids=["validate", "split", "hpo"])
def test_malformed_csv_through_the_cli(tmp_path, command, how):
    data = tmp_path / "data"
    data.mkdir()
    posts, anns = _damaged(how)
    (data / POSTS_FILE).write_bytes(posts)
    (data / ANNOTATIONS_FILE).write_bytes(anns)
    line = _one_line_exit_2([*command, "--data-dir", str(data)], tmp_path)
    assert str(data / (POSTS_FILE if how in ("not-utf8", "empty") else ANNOTATIONS_FILE)) in line
    assert " — " in line  # ... and what to do about it
