import subprocess
import sys

from soraflow.cli import main


def test_help_lists_every_command(capsys):
    try:
        main(["--help"])
    except SystemExit as exit:
        assert exit.code == 0
    out = capsys.readouterr().out
    for command in ("generate", "serve", "world", "train", "eval"):
        assert command in out


def test_group_without_subcommand_shows_help_and_exits_2(capsys):
    assert main(["world"]) == 2
    assert "usage: soraflow world" in capsys.readouterr().out


def test_console_script_error_is_one_line_exit_2():
    # `soraflow generate ""` fails on input; the user sees one line, no traceback.
    proc = subprocess.run([sys.executable, "-m", "soraflow.cli", "generate", ""],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("soraflow: error:")
    assert len(proc.stderr.strip().splitlines()) == 1
