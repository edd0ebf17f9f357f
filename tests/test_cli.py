"""The `hnetbench` dispatcher imports only the command being run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hnetbench import cli

SPEC = Path(cli.__file__).resolve().parent / "sweeps" / "specs" / "cpu.yaml"


def test_help_and_sweep_status_do_not_import_torch(tmp_path: Path):
    code = ("import sys\nfrom hnetbench import cli\ntry:\n    rc = cli.main(sys.argv[1:])\n"
            "except SystemExit as e:\n    rc = e.code\nprint('rc', rc, 'torch' in sys.modules)")
    for argv in (["--help"], ["sweep", "status", str(SPEC)], ["report", "--help"]):
        r = subprocess.run([sys.executable, "-c", code, *argv], cwd=tmp_path,
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        assert r.stdout.splitlines()[-1] == "rc 0 False", (argv, r.stdout[-300:])
        if argv == ["--help"]:  # every command listed with its help line, none imported
            assert all(name in r.stdout for name in cli.COMMANDS)
        if argv[1:2] == ["status"]:
            assert "pending" in r.stdout


@pytest.mark.parametrize("name", list(cli.COMMANDS))
def test_every_command_parses_its_own_help(name: str, capsys):
    with pytest.raises(SystemExit) as e:
        cli.build_parser(name).parse_args([name, "--help"])
    assert e.value.code == 0 and name in capsys.readouterr().out
