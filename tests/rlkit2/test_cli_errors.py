"""rlkit2/cli_errors.py: bad input is one line and exit code 2; a bug keeps its traceback (exit code 1)."""

import numpy as np
import pytest

from rlkit2.cli_errors import ArgumentParser, UsageError, cli_boundary


def entry(error: BaseException):
    @cli_boundary("python scripts/x.py --help")
    def main(argv):
        raise error

    return main


def test_our_error_is_one_line_with_exit_code_2(capsys):
    assert entry(UsageError("'x' is wrong — do y"))([]) == 2
    err = capsys.readouterr().err
    assert err == "error: 'x' is wrong — do y\n"


def test_a_system_error_on_a_path_names_the_path(capsys):
    def main(argv):
        open("/nonexistent-dir-rlkit2/file")

    assert cli_boundary("h")(main)([]) == 2
    err = capsys.readouterr().err
    assert "No such file or directory: '/nonexistent-dir-rlkit2/file' — check that the path exists" in err
    assert "Traceback" not in err


def test_a_third_party_message_gets_the_help_command_and_how_to_report(capsys):
    def main(argv):
        np.random.default_rng().choice([], 1)  # raised inside numpy, with numpy's own words

    assert cli_boundary("python scripts/x.py --help")(main)([]) == 2
    err = capsys.readouterr().err
    assert "check the values given (python scripts/x.py --help)" in err and "RLKIT2_TRACEBACK=1" in err
    assert "Traceback" not in err


def test_a_bug_keeps_its_traceback_and_exit_code_1(capsys):
    assert entry(KeyError("oops"))([]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "KeyError: 'oops'" in err and "error: internal error (KeyError)" in err


def test_rlkit2_traceback_shows_the_traceback_of_a_user_error(capsys, monkeypatch):
    monkeypatch.setenv("RLKIT2_TRACEBACK", "1")
    assert entry(UsageError("bad"))([]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.endswith("error: bad\n")


def test_argparse_errors_use_the_same_form(capsys):
    parser = ArgumentParser(prog="python scripts/x.py")
    parser.add_argument("--n", type=int)
    with pytest.raises(SystemExit) as stop:
        parser.parse_args(["--n", "x"])
    assert stop.value.code == 2
    assert capsys.readouterr().err == ("error: argument --n: invalid int value: 'x' — see: python scripts/x.py "
                                       "--help\n")


def test_ctrl_c_ends_with_exit_code_130_and_no_traceback(capsys):
    assert entry(KeyboardInterrupt())([]) == 130
    assert capsys.readouterr().err == "\ninterrupted\n"
