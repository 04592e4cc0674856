"""MLflow tracking: one parent run per study, one child run per trial.

HPO workers and ``launch train`` both log through :class:`Tracker`; the CLI hands it the
tracking URI (``--mlflow-uri``, env ``MLFLOW_TRACKING_URI``: a server, or a database
such as ``sqlite:///path/mlflow.db``); without one nothing is tracked. ``launch train`` is a study of one
trial (``train-<agent>``).
The MLflow experiment is the psy-agents experiment; the parent run is tagged
``psy.study=<study>`` and found again by every worker (two workers racing at the very first
trial may each create one; children still carry the study tag). Children log the trial's
params, the per-epoch value, final value, state and metrics; a model the study keeps (its
top-k, :mod:`psy_agents.hpo.models`) is logged as the ``model/`` artifacts of its trial's run.
A tracking outage never fails a trial. A *pause* starts at a failed MLflow call: that call
logs the one ``tracking unavailable`` warning of the pause, and the tracker makes no MLflow
call for ``PAUSE_S`` seconds (what a trial logs meanwhile is dropped). The first call after
the pause tries again: it resumes tracking, or fails and starts the next pause with its own
warning. So a tracker (a worker makes one each time it takes up a study) logs one warning
per pause, whether the outage lasts a second or an hour, and a later outage warns again.
Nothing secret is logged: params come from the search space and the spec, a model folder
holds weights, tokenizer and the TrainConfig; never the URL.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

_log = logging.getLogger("psy_agents.tracking")
PAUSE_S = 60.0


class Tracker:
    """MLflow client wrapper whose every call only warns on failure."""

    def __init__(self, uri: str, experiment: str, study: str, spec_params: dict[str, Any], *,
                 pause_s: float = PAUSE_S, clock: Callable[[], float] = time.monotonic):
        """``clock`` (seconds, monotonic) times the pauses of ``pause_s`` seconds."""
        # Fail fast: MLflow's default HTTP retries would stall a trial for minutes.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
        self.uri, self.experiment, self.study = uri, experiment, study
        self.spec_params = spec_params
        self.client = None
        self.parent_id: str | None = None
        self.children: dict[int, str] = {}  # trial number -> run id, while it runs
        self.ended: dict[int, str] = {}  # ... and once it has ended
        self.pause_s, self._clock = pause_s, clock
        self._paused_until = -math.inf

    @classmethod
    def maybe(cls, uri: str | None, experiment: str, study: str,
              spec_params: dict[str, Any]) -> Tracker | None:
        """A tracker when ``uri`` is set, else None (tracking off)."""
        return cls(uri, experiment, study, spec_params) if uri else None

    def _safe(self, what: str, fn, *args, **kwargs):
        """``fn(...)``, or None without calling it during a pause; a failure starts a pause
        and logs its one warning."""
        if self._clock() < self._paused_until:
            return None
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # any MLflow/network failure: warn, never fail the trial
            self._paused_until = self._clock() + self.pause_s
            _log.warning("tracking unavailable (%s: %s: %s); trials go on, retrying tracking "
                         "in %.0f s", what, type(exc).__name__, str(exc).splitlines()[0][:200]
                         if str(exc) else "", self.pause_s)
            return None

    def _parent(self) -> str:
        if self.parent_id is None:
            from mlflow import MlflowClient

            self.client = self.client or MlflowClient(self.uri)
            exp = self.client.get_experiment_by_name(self.experiment)
            exp_id = exp.experiment_id if exp else self.client.create_experiment(self.experiment)
            found = self.client.search_runs(
                [exp_id], filter_string=f"tags.`psy.study` = '{self.study}' and "
                                        "tags.`psy.role` = 'parent'", max_results=1)
            if found:
                self.parent_id = found[0].info.run_id
            else:
                run = self.client.create_run(exp_id, run_name=self.study,
                                             tags={"psy.study": self.study, "psy.role": "parent"})
                self.parent_id = run.info.run_id
                for key, value in self.spec_params.items():
                    self.client.log_param(self.parent_id, key, str(value)[:500])
            self._exp_id = exp_id
        return self.parent_id

    def start_trial(self, number: int, params: dict[str, Any]) -> None:
        def start() -> None:
            parent = self._parent()
            run = self.client.create_run(self._exp_id, run_name=f"{self.study}#{number}", tags={
                "mlflow.parentRunId": parent, "psy.study": self.study, "psy.role": "trial",
                "psy.trial": str(number)})
            self.children[number] = run.info.run_id
            for key, value in params.items():
                self.client.log_param(run.info.run_id, key, value)
        self._safe("start_trial", start)

    def log_epoch(self, number: int, epoch: int, value: float,
                  metrics: dict[str, float] | None = None) -> None:
        """The objective ``value`` after ``epoch`` (and any other per-epoch ``metrics``)."""
        run_id = self.children.get(number)
        if run_id is None:
            return

        def log() -> None:
            for key, val in {"value": value, **(metrics or {})}.items():
                self.client.log_metric(run_id, key.replace("/", "."), float(val), step=epoch)
        self._safe("log_epoch", log)

    def end_trial(self, number: int, state: str, value: float | None,
                  metrics: dict[str, float]) -> None:
        run_id = self.children.pop(number, None)
        if run_id is None:
            return
        self.ended[number] = run_id

        def end() -> None:
            self.client.set_tag(run_id, "psy.state", state)
            for key, val in {**metrics, **({"final_value": value} if value is not None else {})
                             }.items():
                self.client.log_metric(run_id, key, float(val))
            self.client.set_terminated(run_id, "FINISHED" if state != "FAIL" else "FAILED")
        self._safe("end_trial", end)

    def log_model(self, number: int, model_dir: Path) -> None:
        """Log the files of ``model_dir`` as the ``model/`` artifacts of trial ``number``'s
        run (this worker's, else the study's run tagged with that trial)."""
        def log() -> None:
            run_id = self.ended.get(number) or self.children.get(number)
            if run_id is None:
                self._parent()
                found = self.client.search_runs(
                    [self._exp_id], filter_string=f"tags.`psy.study` = '{self.study}' and "
                                                  f"tags.`psy.trial` = '{number}'", max_results=1)
                run_id = found[0].info.run_id if found else None
            if run_id is not None:
                self.client.log_artifacts(run_id, str(model_dir), artifact_path="model")
        self._safe("log_model", log)
