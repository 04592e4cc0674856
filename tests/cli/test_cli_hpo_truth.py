"""`launch hpo` tells the truth: bad input is refused before anything is created (dry run
included), a worker's user error is not restarted, and a failed search exits non-zero.

Real subprocesses and the real PostgreSQL; the failing search uses a backbone folder that
does not exist, which the launcher accepts (it names a folder of the workers' machines) and
every trial then fails on.
"""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from psy_agents.backends.base import Handle
from psy_agents.cli.hpo_checks import check_outcome
from psy_agents.errors import RunFailed
from psy_agents.hpo.connect import open_storage
from psy_agents.hpo.spec import CampaignOverrides, create_campaign
from psy_agents.hpo.stages import StageConfig
from tests.cli.test_cli_hpo import launch

QUICK = ["hpo", "--agent", "criteria", "--stage", "s0", "--experiment", "t"]


@pytest.mark.parametrize("dry_run", [False, True])
@pytest.mark.parametrize(("flags", "message"), [
    (["--fix", "dropout=5"],
     "error: --fix: The value of `dropout` is 5.0, but must be in [0, 1) — give that --fix "
     "a value in the range named\n"),
    (["--data-dir", "/nope"], "error: data folder /nope does not exist — pass --data-dir (or "
                              "PSY_DATA_DIR) with the ReDSM5 CSV files\n"),
    (["--gpus-per-worker", "1"], "error: 1 GPU(s) per worker asked for, but 0 visible"),
])
def test_bad_input_is_one_line_exit_2_and_nothing_is_created(tmp_path, flags, message,
                                                             dry_run):
    out = launch([*QUICK, *flags, *(["--dry-run"] if dry_run else [])], cwd=tmp_path,
                 env={"CUDA_VISIBLE_DEVICES": ""})
    assert out.returncode == 2, out.stderr
    assert out.stderr.startswith(message) and out.stderr.count("\n") == 1, out.stderr
    assert not (tmp_path / "runs").exists()


def test_a_worker_with_a_user_error_is_not_restarted_and_the_launch_exits_1(tmp_path, pg_url):
    out = launch([*QUICK, "--backbone", str(tmp_path / "no-such-model"), "--trials", "4",
                  "--storage", pg_url], cwd=tmp_path)
    assert out.returncode == 1, out.stderr
    log = tmp_path / "runs" / "t" / "logs" / "worker-0.log"
    assert out.stderr.splitlines()[-1] == (
        "error: 1 of 1 local worker(s) of t failed (worker 0: exit 2) — read "
        f"{log}; fix the cause and run the same `launch hpo` command again to resume")
    # 10 failures in a row end the worker with exit 2, once: before, each of its restarts
    # failed 10 more trials (40 in all)
    trials = optuna.load_study(study_name="t.criteria.s0", storage=pg_url).get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL] * 10
    assert "does not exist" in trials[0].user_attrs["fail_reason"]
    text = log.read_text()
    assert "exited with 2 (a user error, see above); not restarted" in text
    assert text.count("# attempt ") == 1


def test_a_stage_that_ends_without_a_complete_trial_is_a_failed_run(pg_url):
    stage = StageConfig(name="s1", trials=2, epochs=2, patience=2, pruner="asha")
    create_campaign(pg_url, experiment="p", agents=["criteria"], stages=(stage,), n_workers=1,
                    overrides=CampaignOverrides(objective="simulated"))
    study = optuna.load_study(study_name="p.criteria.s1", storage=open_storage(pg_url))
    handle = Handle("local", "p", "1", {"workers": [{"index": 0, "state": "succeeded"}]})

    def add(state, value=None):
        study.add_trial(optuna.trial.create_trial(state=state, value=value, params={},
                                                  distributions={},
                                                  intermediate_values={0: 0.1}))

    add(TrialState.PRUNED)
    check_outcome(pg_url, "p", handle)  # 1 of 2: the stage has not ended
    add(TrialState.PRUNED)
    with pytest.raises(RunFailed, match=r"^study p.criteria.s1 ended without a COMPLETE "
                                        r"trial \(2 pruned, 0 failed\)"):
        check_outcome(pg_url, "p", handle)
    add(TrialState.COMPLETE, 0.5)
    check_outcome(pg_url, "p", handle)  # one COMPLETE trial: a result


def test_fix_ranges_are_judged_per_value_and_between_fixed_settings_only():
    from psy_agents.cli.hpo_checks import parse_fixed
    from psy_agents.errors import ConfigError

    # stride (sampled) breaks its rule against a fixed max_length=128: left to each trial
    assert parse_fixed(("max_length=128",)) == {"max_length": 128}
    with pytest.raises(ConfigError, match="`dropout` is 5.0"):  # not masked by stride's rule
        parse_fixed(("max_length=128", "dropout=5"))
    with pytest.raises(ConfigError, match="`stride` is 64"):  # both fixed: judged together
        parse_fixed(("max_length=128", "stride=64"))
