"""`launch baseline`: TF-IDF + logistic regression on the agents' own split of data/sample,
scored with our metric functions; bad input is one error line and exit code 2.

The figures are checked against what predictors that read nothing score on the same split
(tests/training/helpers.py), so a baseline that learned nothing fails whatever the sample.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from psy_agents.cli import main as cli_main
from psy_agents.data.criteria import SYMPTOMS
from psy_agents.data.prepare import prepare_data
from psy_agents.training.baseline import decision_thresholds, sentences
from psy_agents.training.calibrate import DEFAULT_METHOD, fit_decision
from tests.cli import test_cli_answers
from tests.conftest import SAMPLE_DIR
from tests.training.helpers import passing_trivial, trivial_baselines

ENV = {"PSY_DATA_DIR": None, "PSY_DEBUG": None}
FIGURE = r"(\d\.\d{4})"
INTERVAL = rf"\[{FIGURE}, {FIGURE}\]"


@pytest.fixture(scope="module")
def scored(tmp_path_factory) -> tuple[str, dict]:
    """``launch baseline --split test --out F`` on data/sample: (stdout, the JSON)."""
    out = tmp_path_factory.mktemp("baseline") / "sub" / "b.json"
    result = CliRunner().invoke(cli_main.cli, ["baseline", "--data-dir", str(SAMPLE_DIR),
                                               "--split", "test", "--out", str(out)],
                                env=ENV, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output, json.loads(out.read_text())


# ``launch ARGS`` through the console entry point, in-process: (code, stdout, stderr).
answer = test_cli_answers.answer


def test_macro_f1_beats_every_predictor_that_reads_nothing(scored):
    text, _ = scored
    first = text.splitlines()[0]
    assert first == (f"baseline TF-IDF + logistic regression on the test split of {SAMPLE_DIR}: "
                     "45 posts, 405 pairs (trained on 210 train posts; thresholds and cut "
                     "chosen on val)")
    row = re.search(rf"^symptom_macro_f1 +{FIGURE}  {INTERVAL} +{FIGURE}", text, re.M)
    assert row, text
    macro, low, high, auroc = map(float, row.groups())
    trivial = trivial_baselines(prepare_data(SAMPLE_DIR, write=False).split("test"))
    # No predictor that reads nothing reaches the baseline's figure, nor comes within 0.1.
    assert passing_trivial({"symptom_macro_f1": macro - 0.1}, trivial) == []
    assert low <= macro <= high
    assert auroc > 0.75  # ranks positives above negatives far better than chance (0.5)


def test_each_symptom_has_a_row_with_f1_interval_auroc_and_threshold(scored):
    text, saved = scored
    for name in SYMPTOMS:
        row = re.search(rf"^{name} +{FIGURE}  {INTERVAL} +{FIGURE}  (\d\.\d{{3}})$", text,
                        re.M)
        assert row, name
        f1, low, high, auroc, threshold = map(float, row.groups())
        assert (f1, auroc) == pytest.approx(
            (saved["criteria"]["metrics"][f"f1/{name}"],
             saved["criteria"]["metrics"][f"auroc/{name}"]), abs=5e-5)
        assert low <= f1 <= high
        assert threshold == pytest.approx(saved["criteria"]["thresholds"][name], abs=5e-4)


def test_evidence_baseline_answers_better_than_never_answering(scored):
    text, saved = scored
    ev = saved["evidence"]
    assert set(ev["metrics"]) == {"span_f1", "span_em", "no_answer_acc"}
    # never answering scores span F1 0 and no-answer accuracy 1; always answering 0
    assert ev["metrics"]["span_f1"] > 0.3 and ev["metrics"]["no_answer_acc"] > 0.3
    assert 0 < ev["cut"] < 1
    assert re.search(rf"^span_f1 +{FIGURE}$", text, re.M)


def test_out_json_has_the_fields_and_the_agents_split(scored):
    text, saved = scored
    splits = json.loads((SAMPLE_DIR / "splits-13.json").read_text())
    assert (saved["split"], saved["posts"], saved["train_posts"], saved["pairs"]) == (
        "test", len(splits["test"]), len(splits["train"]), 9 * len(splits["test"]))
    assert saved["split_hash"] == splits["hash"] and len(saved["data_hash"]) == 64
    assert saved["bootstrap"] == {"n_boot": 1000, "seed": 0, "level": 0.95}
    crit = saved["criteria"]
    assert set(crit["thresholds"]) == set(SYMPTOMS)
    assert {"symptom_macro_f1", "macro_auroc"} <= set(crit["metrics"])
    low, high = crit["intervals"]["symptom_macro_f1"]
    assert low <= crit["metrics"]["symptom_macro_f1"] <= high
    assert re.search(r"^wrote .*b\.json$", text, re.M)


def test_val_split_is_the_default(answer):
    code, out, err = answer("baseline", "--data-dir", str(SAMPLE_DIR))
    assert (code, err) == (0, "")
    assert " on the val split of " in out.splitlines()[0]


def test_a_missing_data_dir_is_one_line(answer, tmp_path):
    code, out, err = answer("baseline", "--data-dir", str(tmp_path / "nope"))
    assert (code, out) == (2, "")
    assert err == (f"error: {tmp_path / 'nope'}: data directory not found — pass --data-dir or "
                   "set PSY_DATA_DIR to the folder holding the two ReDSM5 CSV files (see "
                   "data/README.md)\n")


def test_a_malformed_csv_is_one_line(answer, tmp_path):
    data = tmp_path / "d"
    data.mkdir()
    shutil.copy(SAMPLE_DIR / "redsm5_annotations.csv", data)
    (data / "redsm5_posts.csv").write_text("post_id,body\np1,hello\n")
    code, out, err = answer("baseline", "--data-dir", str(data))
    assert (code, out, err.count("\n")) == (2, "", 1)
    assert err.startswith(f"error: {data / 'redsm5_posts.csv'} header, column text: the column "
                          "is missing")


def test_an_unknown_split_is_one_line(answer):
    assert answer("baseline", "--split", "train") == (
        2, "", "error: invalid value for '--split': 'train' is not one of 'val', 'test' — see "
               "'launch baseline --help'\n")


def test_an_unwritable_out_is_one_line_and_prints_no_table(answer):
    code, out, err = answer("baseline", "--data-dir", str(SAMPLE_DIR), "--out",
                            "/proc/no/b.json")
    assert (code, out) == (2, "")
    assert err.startswith("error: cannot write the baseline figures to /proc/no/b.json: ")
    assert err.endswith(" — pass a writable file path to --out\n") and err.count("\n") == 1


def test_help_imports_no_sklearn():
    code = ("import sys\nfrom psy_agents.cli.main import main\n"
            "try:\n    main(['baseline', '--help'])\nexcept SystemExit:\n    pass\n"
            "print('SK:', 'sklearn' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert "Usage: launch baseline" in out.stdout
    assert out.stdout.strip().splitlines()[-1] == "SK: False"


# --- the pieces ----------------------------------------------------------------------------

def test_the_baseline_decides_by_the_models_rule():
    """Its thresholds are calibrate.fit_decision's (DEFAULT_METHOD) on the val scores."""
    rng = np.random.default_rng(0)
    y, p = rng.integers(0, 2, (40, 3)), rng.uniform(0, 1, (40, 3))
    names = ["A", "B", "C"]
    want = fit_decision(DEFAULT_METHOD, list(np.repeat([names], 40, axis=0).ravel()),
                        y.ravel(), p.ravel(), posts=list(np.repeat(np.arange(40), 3).astype(str)))
    assert decision_thresholds(names, y, p) == {n: want.threshold(n) for n in names}
    # scores far below 0.5: the rule moves the thresholds (fixed 0.5 would decide nothing)
    low = decision_thresholds(names, y, p / 10)
    assert all(t < 0.1 for t in low.values()), low


def test_sentences_keep_end_marks_and_find_the_gold_sentences():
    assert sentences("I am sad. Really?! Yes\nno   more.  ") == [
        "I am sad.", "Really?!", "Yes", "no   more."]
    pairs = prepare_data(SAMPLE_DIR, write=False).split("val")
    golds = [p.text[s.start:s.end] for p in pairs for s in p.spans]
    found = [g for g in golds if g in {s for p in pairs for s in sentences(p.text)}]
    assert len(golds) > 20 and len(found) / len(golds) > 0.9
