"""The checkpoint lifecycle and the kept top-k models, on real PostgreSQL.

Workers run in this process (the simulated objective: checkpoints, no models) so that the
tests can stop one mid-trial like a SIGTERM does. The top-k rules are driven through
``finish_trial`` / ``sweep_checkpoints`` with staged model folders written by the test (a
file naming its trial), since real training is covered by tests/hpo/test_hpo_prune_sample.py.
"""

from __future__ import annotations

import json
import signal
import threading
import time

import optuna
import pytest
from click.testing import CliRunner
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from psy_agents.cli.main import cli
from psy_agents.errors import EXIT_REQUEUE
from psy_agents.hpo import spaces
from psy_agents.hpo.connect import create_schema_once, open_storage
from psy_agents.hpo.models import finish_trial, prune_models, sweep_checkpoints
from psy_agents.hpo.recovery import REQUEUED, STALE_REASON
from psy_agents.hpo.spec import SPEC_ATTR, CampaignOverrides, StudySpec, create_campaign
from psy_agents.hpo.stages import StageConfig
from psy_agents.hpo.worker import Worker, WorkerConfig
from psy_agents.paths import checkpoint_dir, models_dir
from psy_agents.settings import Settings
from psy_agents.tracking import Tracker

pytestmark = pytest.mark.postgres
NAME = "m.criteria.s1"
STALE = STALE_REASON.format(grace=3)


@pytest.fixture
def restore_signals():
    """Worker.run installs SIGTERM/SIGUSR2 handlers; put pytest's back afterwards."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGUSR2)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def _worker(url, runs, index=0) -> Worker:
    return Worker(WorkerConfig(settings=Settings(storage=url, runs_dir=runs),
                               studies=(NAME,), index=index))


def _simulated(url, stage, epoch_s):
    o = CampaignOverrides(objective="simulated", sim={"epoch_s": epoch_s, "seed": 1})
    create_campaign(url, experiment="m", agents=["criteria"], stages=(stage,), n_workers=1,
                    overrides=o)
    return optuna.load_study(study_name=NAME, storage=open_storage(url))


def _chains(runs):
    root = checkpoint_dir(runs, "m", NAME, 0).parent
    return sorted(int(p.name.split("-")[1]) for p in root.glob("trial-*"))


def test_no_checkpoint_of_a_complete_or_pruned_trial_remains(pg_url, tmp_path,
                                                              restore_signals):
    stage = StageConfig(name="s1", trials=8, epochs=4, patience=4, pruner="asha")
    study = _simulated(pg_url, stage, epoch_s=0.005)
    runs = tmp_path / "runs"
    assert _worker(pg_url, runs).run() == 0
    states = {t.state for t in study.get_trials()}
    assert {TrialState.COMPLETE, TrialState.PRUNED} <= states, states
    assert checkpoint_dir(runs, "m", NAME, 0).parent.is_dir()  # they were written here
    assert _chains(runs) == []
    assert not models_dir(runs, "m", NAME).exists()  # the simulated objective keeps none


def test_a_preempted_trial_keeps_its_checkpoint_until_its_retry_ends(pg_url, tmp_path,
                                                                     restore_signals):
    stage = StageConfig(name="s1", trials=2, epochs=8, patience=8, pruner="none")
    study = _simulated(pg_url, stage, epoch_s=0.1)
    runs = tmp_path / "runs"
    worker = _worker(pg_url, runs)

    def preempt() -> None:  # what SIGTERM does: the handler sets the stop event
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if any(len(t.intermediate_values) >= 2
                   for t in study.get_trials(states=(TrialState.RUNNING,))):
                worker.stop.set()
                return
            time.sleep(0.02)

    threading.Thread(target=preempt, daemon=True).start()
    assert worker.run() == EXIT_REQUEUE
    (victim,) = study.get_trials(states=(TrialState.FAIL,))
    assert victim.user_attrs["fail_reason"].endswith(REQUEUED)
    assert [t.state for t in study.get_trials() if t.number > victim.number] == \
        [TrialState.WAITING]
    assert _chains(runs) == [victim.number]
    assert sweep_checkpoints(study, runs, max_retry=3) == []  # its retry is queued
    assert _chains(runs) == [victim.number]

    assert _worker(pg_url, runs).run() == 0
    (retry,) = [t for t in study.get_trials() if t.user_attrs.get("original_trial")
                == victim.number and t.number != victim.number]
    assert retry.state == TrialState.COMPLETE and retry.user_attrs["resumed_from_epoch"] >= 1
    assert _chains(runs) == []


def _add(study, state, *, value=None, reason=None, system_attrs=None):
    user_attrs = {"fail_reason": reason} if reason else {}
    study.add_trial(create_trial(state=state, value=value, params={"x": 0.5},
                                 distributions={"x": FloatDistribution(0, 1)},
                                 user_attrs=user_attrs, system_attrs=system_attrs or {}))
    return study.get_trials()[-1]


def _stage_checkpoint(runs, chain, marker=None):
    folder = checkpoint_dir(runs, "m", NAME, chain)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "checkpoint.pt").write_text("state")
    if marker is not None:
        (folder / "model").mkdir(exist_ok=True)
        (folder / "model" / "weights").write_text(str(marker))
    return folder


def test_fail_without_retry_is_deleted_requeued_ones_kept_exhausted_ones_swept(pg_url,
                                                                                tmp_path):
    study = _simulated(pg_url, StageConfig(name="s1", trials=9, epochs=2, patience=2), 0.01)
    runs, finish = tmp_path / "runs", dict(experiment="m", keep_models=0, max_retry=1)
    bad = _add(study, TrialState.FAIL, reason="ConfigError: stride too large — lower it")
    preempted = _add(study, TrialState.FAIL, reason=f"preempted (Preempted: stop); {REQUEUED}")
    blip = _add(study, TrialState.FAIL, reason=f"storage unreachable (x); {REQUEUED}")
    killed = _add(study, TrialState.FAIL, reason=STALE)  # its retry is not queued yet
    queued = _add(study, TrialState.FAIL, reason=STALE)
    _add(study, TrialState.WAITING, system_attrs={"failed_trial": queued.number,
                                                  "retry_history": [queued.number]})
    spent = _add(study, TrialState.FAIL, reason=STALE)
    _add(study, TrialState.FAIL, reason=STALE,  # spent's retry, itself failed as stale
         system_attrs={"failed_trial": spent.number, "retry_history": [spent.number]})
    for t in (bad, preempted, blip, killed, queued, spent):
        _stage_checkpoint(runs, t.number)
    for t in (bad, preempted, blip, killed, queued):  # a stale FAIL is not told by a worker
        finish_trial(study, t, runs_dir=runs, **finish)
    kept = [preempted.number, blip.number, killed.number, queued.number]
    assert _chains(runs) == kept + [spent.number]
    assert sweep_checkpoints(study, runs, max_retry=2) == []  # a second retry is to come
    assert sweep_checkpoints(study, runs, max_retry=1) == [spent.number]  # none is
    assert _chains(runs) == kept


def _train_study(pg_url, keep_models):
    """A study of the real objective (nothing is trained here: trials are added)."""
    stage = StageConfig(name="s1", trials=10, epochs=3, patience=3, keep_models=keep_models)
    space = spaces.agent_space("criteria", ("tiny",), stage.epochs)
    spec = StudySpec(experiment="m", agent="criteria", stage=stage.to_dict(), chain=(NAME,),
                     budget=10, space=tuple(spaces.space_to_json(space)))
    study = optuna.create_study(study_name=NAME, storage=create_schema_once(pg_url),
                                direction="maximize")
    study.set_user_attr(SPEC_ATTR, spec.to_json())
    return study


def _kept(runs):
    folders = sorted(models_dir(runs, "m", NAME).glob("trial-*"))
    # every kept folder holds its own trial's model (the marker the test staged)
    assert all((f / "weights").read_text() == f.name.split("-")[1] for f in folders)
    return sorted(int(f.name.split("-")[1]) for f in folders)


def test_top_k_models_enter_and_drop_out(pg_url, tmp_path):
    study, runs = _train_study(pg_url, keep_models=2), tmp_path / "runs"
    expected = [(0.5, [0]), (0.7, [0, 1]), (None, [0, 1]), (0.6, [1, 3]),
                (0.7, [1, 4]),  # ties rank the lower number first...
                (0.7, [1, 4]),  # ... so #5 does not enter
                (0.9, [1, 6])]
    for number, (value, kept) in enumerate(expected):
        _stage_checkpoint(runs, number, marker=number)
        state = TrialState.PRUNED if value is None else TrialState.COMPLETE
        trial = _add(study, state, value=value)
        finish_trial(study, trial, runs_dir=runs, experiment="m", keep_models=2, max_retry=3)
        assert _kept(runs) == kept, (number, value)
    assert _chains(runs) == []


def test_an_older_view_never_deletes_a_newer_model(pg_url, tmp_path):
    """Two workers race: one prunes with a view read before the other's trial completed."""
    study, runs = _train_study(pg_url, keep_models=1), tmp_path / "runs"
    finish = dict(runs_dir=runs, experiment="m", keep_models=1, max_retry=3)
    _stage_checkpoint(runs, 0, marker=0)
    finish_trial(study, _add(study, TrialState.COMPLETE, value=0.5), **finish)
    old_view = study.get_trials()
    _stage_checkpoint(runs, 1, marker=1)
    finish_trial(study, _add(study, TrialState.COMPLETE, value=0.8), **finish)
    assert _kept(runs) == [1]
    assert prune_models(models_dir(runs, "m", NAME), old_view, 1) == []
    assert _kept(runs) == [1]


def test_the_sweep_keeps_a_model_a_killed_worker_left_staged(pg_url, tmp_path):
    study, runs = _train_study(pg_url, keep_models=1), tmp_path / "runs"
    _stage_checkpoint(runs, 0, marker=0)
    _add(study, TrialState.COMPLETE, value=0.5)  # told, then its worker died
    assert sweep_checkpoints(study, runs, max_retry=3) == [0]
    assert _kept(runs) == [0] and _chains(runs) == []


def _export(pg_url, runs, out, models):
    return CliRunner().invoke(cli, ["export", "--study", NAME, "--out", str(out), "--models",
                                    str(models), "--runs-dir", str(runs), "--storage", pg_url])


def test_export_models_copies_exactly_the_kept_ones_or_says_there_are_none(pg_url, tmp_path):
    study, runs = _train_study(pg_url, keep_models=2), tmp_path / "runs"
    res = _export(pg_url, runs, tmp_path / "out0", tmp_path / "none")
    assert res.exit_code == 2
    assert f"error: study {NAME} has no kept models under" in res.output
    assert len(res.output.strip().splitlines()) == 1 and not (tmp_path / "out0").exists()
    for number, value in enumerate((0.4, 0.9, 0.6, 0.1)):
        _stage_checkpoint(runs, number, marker=number)
        finish_trial(study, _add(study, TrialState.COMPLETE, value=value), runs_dir=runs,
                     experiment="m", keep_models=2, max_retry=3)
    stray = models_dir(runs, "m", NAME) / "trial-0"  # out of the top-2, not yet pruned
    stray.mkdir()
    res = _export(pg_url, runs, tmp_path / "out", tmp_path / "models")
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == \
        ["index.json", "trial-1", "trial-2"]
    index = json.loads((tmp_path / "models" / "index.json").read_text())
    assert [(e["trial"], e["value"], e["params"]) for e in index] == \
        [(1, 0.9, {"x": 0.5}), (2, 0.6, {"x": 0.5})]
    assert (tmp_path / "models" / "trial-1" / "weights").read_text() == "1"


def test_a_kept_model_is_logged_to_its_trials_mlflow_run(pg_url, tmp_path):
    from mlflow import MlflowClient

    study, runs = _train_study(pg_url, keep_models=1), tmp_path / "runs"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    MlflowClient(uri).create_experiment("m", artifact_location=(tmp_path / "art").as_uri())
    tracker = Tracker(uri, "m", NAME, {})
    tracker.start_trial(0, {"x": 0.5})
    tracker.end_trial(0, "COMPLETE", 0.5, {})
    _stage_checkpoint(runs, 0, marker=0)
    finish_trial(study, _add(study, TrialState.COMPLETE, value=0.5), runs_dir=runs,
                 experiment="m", keep_models=1, max_retry=3, tracker=tracker)
    artifacts = MlflowClient(uri).list_artifacts(tracker.ended[0], "model")
    assert [a.path for a in artifacts] == ["model/weights"]
    # Another worker's sweep keeps trial 1's model: it finds the run by the trial's tag.
    tracker.start_trial(1, {"x": 0.5})
    tracker.end_trial(1, "COMPLETE", 0.9, {})
    _stage_checkpoint(runs, 1, marker=1)
    _add(study, TrialState.COMPLETE, value=0.9)
    sweep_checkpoints(study, runs, max_retry=3, tracker=Tracker(uri, "m", NAME, {}))
    artifacts = MlflowClient(uri).list_artifacts(tracker.ended[1], "model")
    assert [a.path for a in artifacts] == ["model/weights"] and _kept(runs) == [1]
