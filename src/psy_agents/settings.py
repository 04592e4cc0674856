"""The settings every command decides once, at the CLI edge, and passes down explicitly.

``psy_agents.cli.options`` declares each shared option (``--storage``, ``--experiment``,
``--runs-dir``, ``--data-dir``, ``--stages-file``, ``--cache-dir``) once, with its
environment variable and default, and builds one frozen :class:`Settings` per command
(flag > environment variable > default). Nothing below ``cli/`` reads those variables: a
worker gets its settings from its own command line, which its backend writes.

Paths in a :class:`Settings` are paths *of the machine the process runs on*. The launcher's
``data_dir`` and ``runs_dir`` are not the worker's on Slurm or Kubernetes; the backend says
where they are there (``Backend.worker_paths``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# The environment variable through which every backend hands a worker the storage URL (a
# secret: never in a command line, script or manifest). `launch worker` reads it.
STORAGE_ENV = "PSY_STORAGE"
DEFAULT_STORAGE = "sqlite:///runs/optuna.db"
DEFAULT_EXPERIMENT = "default"
DEFAULT_RUNS_DIR = Path("runs")
DEFAULT_DATA_DIR = Path("data") / "sample"


@dataclass(frozen=True)
class Settings:
    """Where things are and which campaign a command is about.

    Attributes:
        storage: the Optuna storage URL, already resolved (never printed unmasked).
        experiment: campaign name; studies are ``{experiment}.{agent}.{stage}``.
        runs_dir: root of logs, checkpoints, handles and outputs (``<runs_dir>/<experiment>``).
        data_dir: the ReDSM5 folder (``redsm5_posts.csv``, ``redsm5_annotations.csv``).
        stages_file: the stage plans (None: ``launch/stages.toml``, else the packaged copy).
        cache_dir: built models and tokenized features (None: ``<runs_dir>/cache``).
        tracking_uri: MLflow tracking URI (None: nothing is tracked).
    """

    storage: str = DEFAULT_STORAGE
    experiment: str = DEFAULT_EXPERIMENT
    runs_dir: Path = DEFAULT_RUNS_DIR
    data_dir: Path = DEFAULT_DATA_DIR
    stages_file: Path | None = None
    cache_dir: Path | None = None
    tracking_uri: str | None = None

    @property
    def cache(self) -> Path:
        """The cache folder: ``cache_dir``, else ``<runs_dir>/cache``."""
        return self.cache_dir if self.cache_dir is not None else self.runs_dir / "cache"

    @property
    def experiment_dir(self) -> Path:
        """``<runs_dir>/<experiment>``: the experiment's logs, checkpoints and handle."""
        return self.runs_dir / self.experiment
