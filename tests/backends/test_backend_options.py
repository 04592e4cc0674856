"""Backend options: profiles (bad values; unknown keys: tests/reliability/test_fuzz_inputs.py),
prefixed flags, env vars, registry, request checks."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from psy_agents.backends import REGISTRY, LaunchRequest, get_backend
from psy_agents.backends.options import K8sOptions, LocalOptions, SlurmOptions
from psy_agents.backends.registry import load_options
from psy_agents.cli.backend_options import backend_options
from psy_agents.errors import BackendError, ConfigError

REPO = Path(__file__).resolve().parents[2]


@click.command()
@click.option("--workers", type=int, default=1)
@backend_options
def probe(workers: int, backend: str, backend_options) -> None:
    click.echo(f"{backend} {backend_options!r}")


def _run(args: list[str], **env: str):
    return CliRunner().invoke(probe, args, env={"PSY_LAUNCH_DIR": "/nonexistent", **env})


def test_registry_names_each_backend_and_its_options_once():
    assert set(REGISTRY) == {"local", "slurm", "k8s"}
    assert {n: b.options_cls for n, b in REGISTRY.items()} == {
        "local": LocalOptions, "slurm": SlurmOptions, "k8s": K8sOptions}
    assert type(get_backend("slurm", SlurmOptions(partition="p"))).__name__ == "SlurmBackend"
    with pytest.raises(ConfigError, match="unknown backend 'ray' — use one of local, slurm, k8s"):
        get_backend("ray")


@pytest.mark.parametrize("name", ["local", "slurm", "k8s"])
def test_shipped_profiles_load(name):
    opts = load_options(name, profile=REPO / "launch" / f"{name}.toml")
    assert isinstance(opts, REGISTRY[name].options_cls)


def test_bad_value_in_profile_names_the_field(tmp_path):
    bad = tmp_path / "k8s.toml"
    bad.write_text("backoff_limit_per_index = -1\n")
    with pytest.raises(ConfigError, match="`backoff_limit_per_index` is -1, but must be >= 0"):
        load_options("k8s", profile=bad)


def test_flags_override_env_override_profile(tmp_path):
    # `partition` is set on all three levels, `qos` by env and profile, `time_min` only in
    # the profile, `account` nowhere: each level wins exactly where nothing above it is set.
    (tmp_path / "slurm.toml").write_text(
        'partition = "prof"\nqos = "prof"\ntime_min = 60\ncpus_per_task = 3\n')
    env = {"PSY_LAUNCH_DIR": str(tmp_path), "PSY_SLURM_PARTITION": "env",
           "PSY_SLURM_QOS": "env", "PSY_SLURM_CPUS_PER_TASK": "8"}
    result = _run(["--backend", "slurm", "--slurm-partition", "flag", "--slurm-cpus-per-task",
                   "2", "--slurm-setup", "a", "--slurm-setup", "b c"], **env)
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "slurm " + repr(SlurmOptions(
        partition="flag", qos="env", time_min=60, cpus_per_task=2, setup=("a", "b c")))
    # The same keys without their flags: the env var beats the profile.
    result = _run(["--backend", "slurm"], **env)
    assert result.output.strip() == "slurm " + repr(SlurmOptions(
        partition="env", qos="env", time_min=60, cpus_per_task=8))


def test_k8s_key_value_flags_and_defaults():
    result = _run(["--backend", "k8s", "--k8s-node-selector", "gpu=a100",
                   "--k8s-gpus", "1", "--k8s-namespace", "x"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "k8s " + repr(K8sOptions(
        namespace="x", node_selector={"gpu": "a100"}, gpus=1))
    result = _run([])
    assert result.output.strip() == "local " + repr(LocalOptions())


@pytest.mark.parametrize(("cls", "kwargs", "key"), [
    (K8sOptions, {"gpus": 2}, "gpus"),
    (SlurmOptions, {"gpus_per_node": 4}, "gpus_per_node"),
    (SlurmOptions, {"gres": "gpu:a100:2"}, "gres"),
    (SlurmOptions, {"gres": "shard:1,gpu:2"}, "gres"),
])
def test_profiles_asking_for_idle_gpus_are_refused(cls, kwargs, key):
    with pytest.raises(ConfigError) as err:
        cls(**kwargs)
    assert err.value.format_message().startswith(f"the value of `{key}` asks for ")
    assert "but a trial trains on one GPU" in err.value.format_message()


def test_gres_without_more_than_one_gpu_is_accepted():
    assert SlurmOptions(gres="gpu:a100:1").gres == "gpu:a100:1"
    assert SlurmOptions(gres="gpu").gres == "gpu"
    assert SlurmOptions(gres="shard:4").gres == "shard:4"


def test_option_of_an_unselected_backend_is_a_usage_error():
    result = _run(["--slurm-partition", "gpu"])
    assert result.exit_code == 2
    assert result.output.splitlines()[-1] == (
        "Error: --slurm-partition is a slurm option, but --backend is local; drop it or pass "
        "--backend slurm")
    # An env var meant for another backend is not an error: shells export many.
    assert _run(["--backend", "k8s"], PSY_SLURM_PARTITION="gpu").exit_code == 0


def test_bad_key_value_flag_is_a_usage_error():
    result = _run(["--backend", "k8s", "--k8s-node-selector", "novalue"])
    assert result.exit_code == 2
    assert "'novalue' is not KEY=VALUE" in result.output


def test_launch_request_rejects_impossible_values(tmp_path):
    with pytest.raises(BackendError, match="`n_workers` is 0, but must be >= 1"):
        LaunchRequest("e", 0, ("w",), tmp_path)
    with pytest.raises(BackendError, match="secret variable PSY_STORAGE is also in the plain env"):
        LaunchRequest("e", 1, ("w",), tmp_path, env={"PSY_STORAGE": "x"},
                      secret_env_names=("PSY_STORAGE",))
    assert LaunchRequest("e", 1, ("launch", "worker"), tmp_path).argv_for(3) == [
        "launch", "worker", "--index", "3"]


def test_launch_help_does_not_import_submitit_or_kubernetes():
    import subprocess
    import sys

    code = ("import sys; from psy_agents.cli.backend_options import backend_options; "
            "import psy_agents.backends, psy_agents.cli.cancel; "
            "bad = [m for m in ('submitit', 'kubernetes', 'yaml', 'torch') if m in sys.modules]; "
            "print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "[]", out.stderr
