"""The README's commands and the installed package: guards against breaks CI alone would not see."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from hnetbench.kernels import cpu_build

ROOT = Path(__file__).resolve().parents[1]


def _clean_env() -> dict[str, str]:
    # the README's commands run with no extra variables: drop make's and CI's own
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAKE", "MFLAGS"))}
    env.pop("PYTEST_EXIT_FILE", None)
    return env


@pytest.mark.parametrize("target", ["test", "reproduce"])
def test_make_recipe_parses_as_shell(target: str) -> None:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    # -B: print every recipe line, the venv setup included, whatever is already built
    out = subprocess.run(
        ["make", "-n", "-B", target], cwd=ROOT, env=_clean_env(), capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    lines = [ln for ln in out.stdout.splitlines() if ln.strip()]
    assert lines, f"make -n {target} printed no recipe"
    for line in lines:
        parsed = subprocess.run(["/bin/sh", "-n", "-c", line], capture_output=True, text=True)
        assert parsed.returncode == 0, f"`make {target}` recipe line does not parse: {line!r}: " + (
            parsed.stderr.strip()
        )
    expected = ("-m pytest -n auto --dist loadfile tests" if target == "test"
                else "hnetbench reproduce")
    assert any(expected in ln for ln in lines), lines


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "make test" in readme
    ci = [ln.strip() for ln in (ROOT / ".ci" / "run").read_text().splitlines()]
    commands = [ln for ln in ci if ln and not ln.startswith("#")]
    assert "make test" in commands, commands


@pytest.mark.slow
def test_installed_package_finds_its_data(tmp_path: Path) -> None:
    """`pip install .` (not editable) into a fresh venv: corpora, tasks, specs and the C
    kernels' sources are installed."""
    # build from a copy: setuptools leaves build/ in the source tree, and a stale build/lib
    # would put deleted modules into the wheel
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "results", "*.egg-info", "__pycache__", ".pytest_cache"))
    wheels = tmp_path / "wheels"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(wheels), str(src)],
        capture_output=True, text=True,
    )
    assert build.returncode == 0, build.stderr[-2000:]
    # a fresh install prints no setuptools warnings (data folders are declared packages)
    assert "recognizes" not in build.stderr and "absent from the `packages`" not in build.stderr
    assert "deprecated" not in build.stderr, build.stderr[-2000:]

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    wheel = next(wheels.glob("hnetbench-*.whl"))
    inst = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps",
         str(wheel)],
        capture_output=True, text=True,
    )
    assert inst.returncode == 0, inst.stderr[-2000:]
    # the dependencies (torch, numpy, ...) come from this environment's site-packages; a plain
    # path entry does not run its .pth files, so the editable checkout stays out of the way
    site = subprocess.run([str(py), "-c", "import site; print(site.getsitepackages()[0])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    (Path(site) / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    probe = (
        "import hnetbench, pathlib\n"
        "from hnetbench.data.corpus import load_documents, list_domains\n"
        "from hnetbench.evals.harness import TASKS_DIR\n"
        "from hnetbench.sweeps.reproduce import SPECS\n"
        "print(pathlib.Path(hnetbench.__file__).parent)\n"
        "print(sorted(list_domains()))\n"
        "print(sum(len(load_documents(d, 'test')) > 0 for d in list_domains()))\n"
        "print(len(list(TASKS_DIR.glob('*.yaml'))), len(list(TASKS_DIR.glob('*.jsonl'))))\n"
        "print(sorted(p.stem for p in SPECS.glob('*.yaml')))\n"
        "from hnetbench.kernels import (attn_cpu, conv_cpu, cross_entropy_cpu, norm_cpu,\n"
        "    rope_cpu, ssd_cpu, swiglu_cpu)\n"
        "print([m.available() for m in (ssd_cpu, conv_cpu, norm_cpu, rope_cpu, attn_cpu,\n"
        "    swiglu_cpu, cross_entropy_cpu)])\n"
        "from hnetbench.sweeps.cost import code_commit\n"
        "print(code_commit())\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([str(py), "-c", probe], cwd=tmp_path, env=env, capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    pkg, domains, with_test, tasks, specs, c_kernels, commit = out.stdout.strip().splitlines()
    assert commit == "None"  # an installed wheel is no checkout: cost.json names no commit
    assert pkg.startswith(str(venv)), pkg  # the installed copy, not the checkout
    assert domains == str(["code", "dna", "en", "zh"])
    assert int(with_test) == 4
    n_yaml, n_jsonl = map(int, tasks.split())
    assert n_yaml >= 7 and n_jsonl >= 7
    assert "cpu" in specs and "paper-L" in specs
    if cpu_build.compiler():  # the C sources (and their header) are installed and build
        assert c_kernels == str([True] * 7), out.stderr[-2000:]

    cli = subprocess.run([str(py), "-m", "hnetbench.cli", "eval", "tasks"], cwd=tmp_path, env=env,
                         capture_output=True, text=True)
    assert cli.returncode == 0, cli.stderr[-2000:]
    assert "hnb_cont_en" in cli.stdout
