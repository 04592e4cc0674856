"""Config plumbing: untrusted mappings become frozen dataclasses or one clear ConfigError."""

from __future__ import annotations

import pytest

from psy_agents.config import from_mapping, read_toml
from psy_agents.errors import ConfigError
from psy_agents.training.config import TrainConfig


def test_defaults_and_overrides():
    cfg = TrainConfig.from_dict({"agent": "joint", "lr": 1, "pooling": "mean"})
    assert cfg.agent == "joint" and cfg.lr == 1.0 and isinstance(cfg.lr, float)
    assert cfg.pooling == "mean" and cfg.epochs == TrainConfig().epochs


def test_unknown_key_lists_valid_keys():
    with pytest.raises(ConfigError) as exc:
        TrainConfig.from_dict({"learning_rate": 0.1}, source="params.json")
    msg = exc.value.format_message()
    assert msg.startswith("params.json: unknown key 'learning_rate' — valid keys are: ")
    assert "lr" in msg and "\n" not in msg


@pytest.mark.parametrize(("key", "value", "expected"), [
    ("epochs", "3", "must be int"),
    ("epochs", True, "must be int"),
    ("lr", "fast", "must be float"),
    ("pooling", "sum", "must be one of 'cls', 'mean', 'max'"),
])
def test_wrong_type_names_field(key, value, expected):
    with pytest.raises(ConfigError) as exc:
        TrainConfig.from_dict({key: value}, source="params.json")
    assert f"the value of '{key}' is {value!r}, but {expected}" in exc.value.format_message()


def test_out_of_range_value_is_config_error():
    with pytest.raises(ConfigError, match="The value of `dropout` is 1.5, but must be in"):
        TrainConfig.from_dict({"dropout": 1.5})


def test_non_mapping_rejected():
    with pytest.raises(ConfigError, match="expected a table of keys"):
        from_mapping(TrainConfig, [1, 2], source="x.json")


def test_read_toml_errors(tmp_path):
    bad = tmp_path / "p.toml"
    bad.write_text("a = = 1\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        read_toml(bad)
    with pytest.raises(ConfigError, match="file not found"):
        read_toml(tmp_path / "missing.toml")



def test_lazy_import_loads_the_module_on_first_use_only():
    import subprocess
    import sys

    code = ("import sys; from psy_agents.lazy import lazy_import; m = lazy_import('fractions'); "
            "before = 'fractions' in sys.modules; half = m.Fraction(1, 2); "
            "print(before, 'fractions' in sys.modules, half, m.__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.split() == ["False", "True", "1/2", "fractions"], out.stderr
