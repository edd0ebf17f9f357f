"""The `hnetbench` dispatcher imports only the command being run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hnetbench import cli

SPEC = Path(cli.__file__).resolve().parent / "sweeps" / "specs" / "cpu.yaml"


RUN = ("import sys\nfrom hnetbench import cli\ntry:\n    rc = cli.main(sys.argv[1:])\n"
       "except SystemExit as e:\n    rc = e.code\n"
       "print('rc', rc, 'torch' in sys.modules, 'torch._dynamo' in sys.modules)")


def _run(argv: list[str], cwd: Path) -> list[str]:
    r = subprocess.run([sys.executable, "-c", RUN, *argv], cwd=cwd, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout.splitlines()


def test_help_and_sweep_status_do_not_import_torch(tmp_path: Path):
    for argv in (["--help"], ["sweep", "status", str(SPEC)], ["report", "--help"]):
        out = _run(argv, tmp_path)
        assert out[-1] == "rc 0 False False", (argv, out[-5:])
        if argv == ["--help"]:  # every command listed with its help line, none imported
            assert all(any(line.strip().startswith(n) for line in out) for n in cli.COMMANDS)
        if argv[1:2] == ["status"]:
            assert any("pending" in line for line in out)


def test_parameter_counts_run_no_python_decompositions(tmp_path: Path):
    """Built on the meta device, an H-Net's fills and init math are skipped: on meta they run
    torch's Python decompositions, the first of which imports torch._dynamo (~2 s)."""
    out = _run(["flops", "hnet-2stage@cpu-tiny"], tmp_path)
    assert out[-1] == "rc 0 True False", out[-5:]


@pytest.mark.parametrize("name", list(cli.COMMANDS))
def test_every_command_parses_its_own_help(name: str, capsys):
    with pytest.raises(SystemExit) as e:
        cli.build_parser(name).parse_args([name, "--help"])
    assert e.value.code == 0 and name in capsys.readouterr().out
