"""The package's import structure: layers one way, no cycles, configuration read at the edge.

Layers run one way, top to bottom:
cli -> bench -> hpo/reporting -> training/tracking -> agents/backends -> data ->
config/errors/paths/settings (and the package ``__init__``). A module imports its own layer
or a lower one, never a higher one, and no two modules import each other, directly or around
a longer loop. A function-local import does not hide a cycle: it still is one, only one that
fails later and at random.

``launch --help`` must stay light, so heavy third-party libraries (torch, transformers,
optuna, kubernetes...) are imported inside the functions that need them. The package's own
modules, though, are imported at the top of each module, where the dependency is visible and
a cycle fails at once; only ``cli/`` imports its subcommands lazily.

``PSY_*`` environment variables are read once, at the CLI edge (``cli/``, or the allow-listed
``ENV_READERS``), and passed down as values, so the library below behaves the same whoever
calls it. And a module stays under ``MAX_LINES`` lines.

The checker is ``tests/architecture.py`` (static, ``ast`` only; the package is never
imported). The first tests run it on the real package; the rest build throw-away packages
named ``psy_agents`` in ``tmp_path``, so the same LAYERS apply, and prove each check can fail.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tests import architecture as arch


def _listing(problems: list[str], what: str) -> str:
    return f"{len(problems)} {what} (paths are under src/):\n" + "\n".join(problems)


# --- the real package ---------------------------------------------------------------------


def test_checker_sees_the_real_package():
    """Guards the checks below against passing because they looked at nothing."""
    modules = arch.load_modules()
    assert "psy_agents" in modules
    assert "psy_agents.cli.main" in modules  # the `launch` entry point
    assert len(modules) > 20
    assert any(imp.importer == "psy_agents.cli.main" for imp in arch.collect_imports(modules))


def test_no_import_cycles():
    problems = arch.find_cycles()
    assert not problems, _listing(problems, "import cycles; break each by moving the shared "
                                            "code down a layer or into a module of its own")


def test_layers_import_downward_only():
    problems = arch.find_layer_violations()
    assert not problems, _listing(problems, "layer problems")


def test_psy_environment_is_read_only_at_the_cli_edge():
    problems = arch.find_env_reads()
    assert not problems, _listing(
        problems, "PSY_* environment reads below cli/; read them in cli/ and pass the value")


def test_own_modules_are_imported_at_module_top():
    problems = arch.find_local_imports()
    assert not problems, _listing(problems, "function-local imports of psy_agents modules")


def test_modules_stay_small():
    problems = arch.find_large_modules()
    assert not problems, _listing(problems, "modules too long")


# --- throw-away packages: each check can fail ---------------------------------------------


def make_package(tmp_path: Path, files: dict[str, str]) -> Path:
    """A package ``psy_agents`` under tmp_path with these files (path -> source); every
    folder gets an empty ``__init__.py`` unless one is given."""
    root = tmp_path / "psy_agents"
    for rel, source in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source).lstrip("\n"), encoding="utf-8")
    for folder in [root, *(p for p in root.rglob("*") if p.is_dir())]:
        (folder / "__init__.py").touch(exist_ok=True)
    return root


def test_two_module_cycle_through_a_function_local_import(tmp_path):
    root = make_package(tmp_path, {
        "hpo/objective.py": "from psy_agents.hpo import simulated\n",
        "hpo/simulated.py": """
            import math


            def run():
                from psy_agents.hpo.objective import Objective
                return Objective, math
        """,
    })
    assert arch.find_cycles(root) == [
        "psy_agents.hpo.objective -> psy_agents.hpo.simulated -> psy_agents.hpo.objective "
        "(psy_agents/hpo/objective.py:1, psy_agents/hpo/simulated.py:5 in run())"]


def test_three_module_cycle(tmp_path):
    root = make_package(tmp_path, {
        "hpo/a.py": "from psy_agents.hpo import b\n",
        "hpo/b.py": "import psy_agents.hpo.c\n",
        "hpo/c.py": "from psy_agents.hpo.a import thing\n",
    })
    assert arch.find_cycles(root) == [
        "psy_agents.hpo.a -> psy_agents.hpo.b -> psy_agents.hpo.c -> psy_agents.hpo.a "
        "(psy_agents/hpo/a.py:1, psy_agents/hpo/b.py:1, psy_agents/hpo/c.py:1)"]


def test_tangle_shows_every_module_in_a_cycle(tmp_path):
    root = make_package(tmp_path, {
        "hpo/a.py": "from psy_agents.hpo import b\n",
        "hpo/b.py": "from psy_agents.hpo import a, c\n",
        "hpo/c.py": "from psy_agents.hpo import b\n",
    })
    assert arch.find_cycles(root) == [
        "psy_agents.hpo.a -> psy_agents.hpo.b -> psy_agents.hpo.a "
        "(psy_agents/hpo/a.py:1, psy_agents/hpo/b.py:1)",
        "psy_agents.hpo.b -> psy_agents.hpo.c -> psy_agents.hpo.b "
        "(psy_agents/hpo/b.py:1, psy_agents/hpo/c.py:1)"]


def test_no_cycle_for_one_way_imports_and_self_imports(tmp_path):
    root = make_package(tmp_path, {
        "__init__.py": "from . import __version__\n",  # resolves to the package itself
        "hpo/a.py": "from psy_agents.hpo import b\nimport psy_agents.hpo.a\n",
        "hpo/b.py": "from psy_agents import errors\n",
        "errors.py": "",
    })
    assert arch.find_cycles(root) == []


def test_upward_import_is_a_layer_violation(tmp_path):
    root = make_package(tmp_path, {
        "data/features.py": '"""Features."""\n\nfrom psy_agents.hpo.spec import Spec\n',
        "hpo/spec.py": "from psy_agents.data import features\nfrom psy_agents import reporting\n",
        "reporting.py": "from psy_agents.errors import Error\n",
        "errors.py": "",
    })
    assert arch.find_layer_violations(root) == [
        "psy_agents/data/features.py:3: psy_agents.data.features imports psy_agents.hpo.spec "
        "(layer data imports the higher layer hpo)"]


def test_upward_function_local_import_is_a_layer_violation(tmp_path):
    root = make_package(tmp_path, {
        "data/features.py": "def key():\n    from psy_agents.agents import backbones\n",
        "agents/backbones.py": "",
    })
    assert arch.find_layer_violations(root) == [
        "psy_agents/data/features.py:2: psy_agents.data.features imports "
        "psy_agents.agents.backbones (layer data imports the higher layer agents)"]


def test_unlayered_modules_are_reported_once(tmp_path):
    root = make_package(tmp_path, {
        "extra.py": "",
        "plugins/loader.py": "",
        "hpo/spec.py": "from psy_agents import extra\nfrom psy_agents.plugins import loader\n",
        "configuration.py": "",  # a prefix of no key: "psy_agents.config" is not its parent
    })
    assert arch.find_layer_violations(root) == [
        "psy_agents/configuration.py: module psy_agents.configuration has no layer; "
        "add it to LAYERS",
        "psy_agents/extra.py: module psy_agents.extra has no layer; add it to LAYERS",
        "psy_agents/plugins/__init__.py: module psy_agents.plugins has no layer; add it to LAYERS",
        "psy_agents/plugins/loader.py: module psy_agents.plugins.loader has no layer; "
        "add it to LAYERS"]


def test_layer_of_longest_prefix_wins():
    assert arch.layer_of("psy_agents") == ("psy_agents", 1)
    assert arch.layer_of("psy_agents.cli.hpo") == ("cli", 7)
    assert arch.layer_of("psy_agents.hpo.storage") == ("hpo", 5)
    assert arch.layer_of("psy_agents.reporting") == ("reporting", 5)
    assert arch.layer_of("psy_agents.hpox") is None
    assert arch.layer_of("psy_agents.new_thing") is None


_DATA_ENV = """
    import os

    ENV = "PSY_Y"
    OTHER = "HF_HUB_OFFLINE"


    def read():
        a = os.environ.get("PSY_X")
        b = os.environ[ENV]
        c = os.environ.get("HF_HUB_OFFLINE")
        d = os.environ.get(OTHER)
        e = os.environ["SLURM_JOB_ID"], os.getenv("KUBECONFIG"), os.getenv("MLFLOW_TRACKING_URI")
        return a, b, c, d, e
"""


def test_psy_env_read_below_cli_is_flagged(tmp_path):
    root = make_package(tmp_path, {
        "data/load.py": _DATA_ENV,
        "cli/data.py": _DATA_ENV,
        "worker_env.py": _DATA_ENV,
    })
    assert arch.find_env_reads(root) == [
        "psy_agents/data/load.py:8: reads the environment variable PSY_X",
        "psy_agents/data/load.py:9: reads the environment variable PSY_Y"]


@pytest.mark.parametrize(("source", "variable"), [
    ('import os\nos.environ["PSY_A"]\n', "PSY_A"),
    ('import os\nos.environ.get("PSY_A", "x")\n', "PSY_A"),
    ('import os\nos.getenv("PSY_A")\n', "PSY_A"),
    ('import os\n"PSY_A" in os.environ\n', "PSY_A"),
    ('import os\n"PSY_A" not in os.environ\n', "PSY_A"),
    ('import os\nos.environ.setdefault("PSY_A", "1")\n', "PSY_A"),
    ('import os\nos.environ.pop("PSY_A", None)\n', "PSY_A"),
    ('import os\nos.environ["PSY_A"] = "1"\n', "PSY_A"),
    ('from os import environ\nenviron.get("PSY_A")\n', "PSY_A"),
    ('from os import getenv as ge\nge("PSY_A")\n', "PSY_A"),
    ('import os as _os\n_os.environ.get("PSY_A")\n', "PSY_A"),
    ('import os\nb = "slurm"\nos.environ.get(f"PSY_{b.upper()}_X")\n', "PSY_{b.upper()}_X"),
    ('import os\nK: str = "PSY_A"\nos.environ[K]\n', "PSY_A"),
    ('import os\ndef f(env=None):\n    env = os.environ if env is None else env\n'
     '    return env.get("PSY_A")\n', "PSY_A"),
    ('import os\ndef f(env=None):\n    env = env or os.environ\n    return env["PSY_A"]\n',
     "PSY_A"),
])
def test_each_form_of_psy_env_read_is_flagged(tmp_path, source, variable):
    root = make_package(tmp_path, {"hpo/stages.py": source})
    problems = arch.find_env_reads(root)
    assert len(problems) == 1
    assert problems[0].startswith("psy_agents/hpo/stages.py:")
    assert problems[0].endswith(f": reads the environment variable {variable}")


@pytest.mark.parametrize("source", [
    'import os\nos.environ.get("HF_HUB_OFFLINE")\n',
    'import os\nos.environ.get("SLURM_RESTART_COUNT", "0")\n',
    'import os\n"KUBECONFIG" in os.environ\n',
    'import os\nos.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")\n',
    'import os\n{k: v for k, v in os.environ.items() if k != "PSY_STORAGE"}\n',
    'def f(env):\n    return env.get("PSY_A")\n',  # a mapping passed in, not the environment
    'def f(environ):\n    return environ["PSY_A"]\n',  # not os.environ: no `from os import`
    'import os\ndef f():\n    env = os.environ\n\ndef g(env):\n    return env.get("PSY_A")\n',
    'HELP = "set PSY_DATA_DIR"\n',
])
def test_other_env_reads_are_not_flagged(tmp_path, source):
    root = make_package(tmp_path, {"hpo/stages.py": source})
    assert arch.find_env_reads(root) == []


def test_function_local_own_import_is_flagged_outside_cli(tmp_path):
    local = """
        import psy_agents.errors


        def run():
            import torch
            from psy_agents.hpo import spec
            from . import storage
            return torch, spec, storage


        class Worker:
            def start(self):
                import psy_agents.errors as errors
                return errors
    """
    root = make_package(tmp_path, {
        "hpo/worker.py": local, "hpo/spec.py": "", "hpo/storage.py": "",
        "cli/worker.py": local, "cli/storage.py": "", "errors.py": "",
    })
    assert arch.find_local_imports(root) == [
        "psy_agents/hpo/worker.py:6: function-local import of psy_agents.hpo.spec in run(); "
        "import it at the top of the module",
        "psy_agents/hpo/worker.py:7: function-local import of psy_agents.hpo.storage in run(); "
        "import it at the top of the module",
        "psy_agents/hpo/worker.py:13: function-local import of psy_agents.errors in "
        "Worker.start(); import it at the top of the module"]


def test_a_deferred_module_may_be_imported_in_a_function_and_nothing_else(tmp_path):
    registry = """
        def build():
            from psy_agents.agents.models import Model
            from psy_agents.agents import heads
            return Model, heads
    """
    root = make_package(tmp_path, {"agents/registry.py": registry, "agents/models.py": "",
                                   "agents/heads.py": ""})
    assert arch.find_local_imports(root) == [
        "psy_agents/agents/registry.py:3: function-local import of psy_agents.agents.heads in "
        "build(); import it at the top of the module"]


def test_relative_imports_resolve(tmp_path):
    root = make_package(tmp_path, {
        "data/__init__.py": "from . import splits\nfrom .load import read\n",
        "data/load.py": "from . import splits, SOMETHING\nfrom .splits import split\n",
        "data/splits.py": "",
        "hpo/spec.py": "from ..data import load\nfrom ..data.splits import split\n"
                       "from .. import errors\nfrom ... import beyond_the_top\n",
        "errors.py": "",
    })
    edges = {(imp.importer, imp.target, imp.line)
             for imp in arch.collect_imports(arch.load_modules(root))}
    assert edges == {
        ("psy_agents.data", "psy_agents.data.splits", 1),
        ("psy_agents.data", "psy_agents.data.load", 2),
        ("psy_agents.data.load", "psy_agents.data.splits", 1),
        ("psy_agents.data.load", "psy_agents.data", 1),  # SOMETHING: a name in data/__init__
        ("psy_agents.data.load", "psy_agents.data.splits", 2),
        ("psy_agents.hpo.spec", "psy_agents.data.load", 1),
        ("psy_agents.hpo.spec", "psy_agents.data.splits", 2),
        ("psy_agents.hpo.spec", "psy_agents.errors", 3),
    }


def test_relative_upward_import_is_a_layer_violation(tmp_path):
    root = make_package(tmp_path, {"data/load.py": "from ..hpo import spec\n", "hpo/spec.py": ""})
    assert arch.find_layer_violations(root) == [
        "psy_agents/data/load.py:1: psy_agents.data.load imports psy_agents.hpo.spec "
        "(layer data imports the higher layer hpo)"]


def test_module_over_400_lines_is_flagged(tmp_path):
    root = make_package(tmp_path, {
        "hpo/storage.py": "x = 1\n" * 401,
        "hpo/spec.py": "x = 1\n" * 400,
    })
    assert arch.find_large_modules(root) == [
        "psy_agents/hpo/storage.py: 401 lines, over the limit of 400; split it"]
