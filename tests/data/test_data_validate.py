"""`launch data validate` finds every planted quirk with the count the generator recorded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from psy_agents.data.report import QUIRK_NAMES
from psy_agents.data.synth import write_synthetic

FILES = ("redsm5_posts.csv", "redsm5_annotations.csv", "manifest.json")


def _report(launch, folder: Path, *args: str) -> dict:
    result = launch("data", "validate", "--data-dir", folder, "--json", *args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_sample_counts_match_manifest(sample_dir, launch):
    manifest = json.loads((sample_dir / "manifest.json").read_text())
    report = _report(launch, sample_dir)
    assert report["counts"] == manifest["quirks"]
    assert all(manifest["quirks"][name] > 0 for name in QUIRK_NAMES)
    assert report["posts"] == manifest["n_posts"] == 300
    assert report["annotation_rows"] == manifest["n_annotations"]


@pytest.mark.parametrize(("n_posts", "seed"), [(40, 1), (200, 2), (500, 3)])
def test_fresh_synth_counts_match_manifest(n_posts, seed, tmp_path, launch):
    manifest = write_synthetic(tmp_path, n_posts=n_posts, seed=seed)
    report = _report(launch, tmp_path)
    assert report["counts"] == manifest.quirks
    unknown = next(q for q in report["quirks"] if q["name"] == "unknown_symptom")
    assert unknown["rows"] == manifest.planted_rows["unknown_symptom"]
    assert _hard_negatives(tmp_path) == manifest.hard_negatives > 0


def test_sample_is_what_the_generator_writes(sample_dir, tmp_path, launch):
    result = launch("data", "synth", "--out", tmp_path, "--n-posts", "300", "--seed", "0")
    assert result.exit_code == 0 and result.stdout.startswith(f"wrote {tmp_path}: 300 posts")
    for name in FILES:
        assert (tmp_path / name).read_bytes() == (sample_dir / name).read_bytes(), name
    assert sum((sample_dir / n).stat().st_size for n in FILES) < 1_500_000


def test_other_seed_other_data(tmp_path):
    write_synthetic(tmp_path / "a", n_posts=60, seed=1)
    write_synthetic(tmp_path / "b", n_posts=60, seed=2)
    name = "redsm5_posts.csv"
    assert (tmp_path / "a" / name).read_bytes() != (tmp_path / "b" / name).read_bytes()


def test_planted_quirk_shapes(sample_dir, launch):
    """Shapes the task asks for: ~20% repeated pair rows, ~10% of evidence past 512 tokens."""
    report = _report(launch, sample_dir)
    counts = report["counts"]
    assert 0.12 <= counts["duplicate_pair_rows"] / report["annotation_rows"] <= 0.25
    located = report["spans"]
    assert 0.05 <= counts["evidence_beyond_512_tokens"] / located <= 0.15
    assert counts["unlocatable_evidence"] >= 2
    posts = (sample_dir / "redsm5_posts.csv").read_text(encoding="utf-8")
    assert "\uff5e" in posts and "  " in posts


def test_text_report_lists_each_quirk_and_summary(sample_dir, launch):
    result = launch("data", "validate", "--data-dir", sample_dir)
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    manifest = json.loads((sample_dir / "manifest.json").read_text())["quirks"]
    for name, count in manifest.items():
        line = next(x for x in lines if f" {name} " in x)
        assert f" {count} " in line and ("rows " in line or "row " in line)
    # The misspelled row is skipped with a warning that names the row the generator planted.
    [row] = json.loads((sample_dir / "manifest.json").read_text())["planted_rows"][
        "unknown_symptom"]
    assert lines[2].split()[:4] == ["warning", "unknown_symptom", "1", "skipped"]
    assert lines[2].endswith(f"redsm5_annotations.csv row {row}: unknown symptom 'LEEP_ISSUES'")
    assert lines[-1].startswith("summary: 8 kinds of quirk (6 warnings, 2 info); all handled")


def _hard_negatives(folder: Path) -> int:
    """Explicit status-0 rows of absent pairs, each checked to be one of the generator's
    denial wordings of that very symptom (so it reads like the symptom) found in its post."""
    from psy_agents.data.load import read_data
    from psy_agents.data.synth_text import NEGATIVE
    from psy_agents.data.validate import load_dataset

    raw = read_data(folder)
    labels = {(p.post_id, p.symptom): p.label for p in load_dataset(folder).pairs}
    hard = [a for a in raw.annotations
            if a.status == 0 and labels.get((a.post_id, a.symptom)) == 0]
    for a in hard:
        assert a.sentence in NEGATIVE[a.symptom] and a.sentence in raw.posts[a.post_id], a
    return len(hard)


def test_sample_has_the_hard_negatives_the_generator_planted(sample_dir):
    manifest = json.loads((sample_dir / "manifest.json").read_text())
    assert _hard_negatives(sample_dir) == manifest["hard_negatives"]
    # Enough for a model to learn that the symptom's words alone do not mean "present".
    assert manifest["hard_negatives"] >= 50


def test_special_case_kept_on_request(sample_dir, launch):
    report = _report(launch, sample_dir, "--include-special-case")
    special = next(q for q in report["quirks"] if q["name"] == "special_case_rows")
    assert special["action"] == "handled" and report["pairs"] == 300 * 10


def test_data_dir_from_env(sample_dir, launch):
    result = launch("data", "validate", "--json", env={"PSY_DATA_DIR": str(sample_dir)})
    assert result.exit_code == 0 and json.loads(result.stdout)["data_dir"] == str(sample_dir)


def test_stats_per_split(sample_dir, launch, tmp_path):
    splits = tmp_path / "s.json"
    assert launch("data", "split", "--data-dir", sample_dir, "--out", splits).exit_code == 0
    result = launch("data", "stats", "--data-dir", sample_dir, "--splits", splits, "--json")
    assert result.exit_code == 0, result.output
    stats = json.loads(result.stdout)["splits"]
    validated = _report(launch, sample_dir)
    present = sum(row["present"] for t in stats.values() for row in t.values())
    spans = sum(row["spans"] for t in stats.values() for row in t.values())
    assert present == validated["present_pairs"] and spans == validated["spans"]
    assert sum(row["present"] + row["absent"] for row in stats["val"].values()) == 45 * 9
    text = launch("data", "stats", "--data-dir", sample_dir, "--splits", splits)
    assert text.stdout.splitlines()[1].split() == ["split", "symptom", "present", "absent",
                                                  "prev%", "spans"]


def test_real_subprocess_exit_codes(sample_dir, repo_root, tmp_path):
    """The installed `launch` entry point: 0 on the sample, 2 and one line under --strict."""
    import subprocess

    exe = repo_root / ".venv" / "bin" / "launch"
    ok = subprocess.run([exe, "data", "validate", "--data-dir", sample_dir],
                        capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and ok.stdout.splitlines()[-1].startswith("summary: ")
    bad = subprocess.run([exe, "data", "validate", "--data-dir", sample_dir, "--strict"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stdout == ""
    [line] = bad.stderr.splitlines()
    assert line.startswith(f"error: {sample_dir / 'redsm5_annotations.csv'} row ")
    assert ", column DSM5_symptom: unknown symptom 'LEEP_ISSUES'" in line


def test_every_sample_span_points_at_its_sentence(sample_dir):
    from psy_agents.data.pairs import normalize
    from psy_agents.data.validate import load_dataset

    pairs = load_dataset(sample_dir).pairs
    spans = [(p, s) for p in pairs for s in p.spans]
    assert len(spans) > 400
    for pair, span in spans:
        assert normalize(pair.text[span.start:span.end]) == normalize(span.sentence)
        assert pair.label == 1
