"""The ``lmcsds`` command: every ``python -m lmcsds.X`` entry point is a subcommand with the same
flags, and every flag explains itself and shows its default."""

import argparse
import importlib
from pathlib import Path

import pytest

import lmcsds
from lmcsds.cli import build_parser, main
from lmcsds.commands import COMMANDS, command_parser

PACKAGE = Path(lmcsds.__file__).parent


def _subparsers(parser):
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices


def test_every_module_entry_point_is_a_subcommand():
    entry_points = {
        ".".join(("lmcsds",) + p.relative_to(PACKAGE).with_suffix("").parts)
        for p in PACKAGE.rglob("*.py")
        if 'if __name__ == "__main__"' in p.read_text() and p.name != "cli.py"
    }
    registered = {module for _, module, _ in COMMANDS}
    assert entry_points and entry_points <= registered, entry_points - registered
    assert set(_subparsers(build_parser())) >= {name for name, _, _ in COMMANDS}


@pytest.mark.parametrize("name,module", [(n, m) for n, m, _ in COMMANDS])
def test_module_main_and_subcommand_take_the_same_flags(name, module):
    mod = importlib.import_module(module)
    standalone = command_parser(mod.__doc__, mod.add_arguments)
    sub = _subparsers(build_parser())[name]
    flags = lambda p: sorted((a.dest, a.default, bool(a.required)) for a in p._actions)  # noqa
    assert flags(standalone) == flags(sub)


def test_every_flag_has_a_help_text_and_its_default_is_shown():
    for name, parser in _subparsers(build_parser()).items():
        text = parser.format_help()
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help, f"lmcsds {name} {action.option_strings or action.dest}: no help"
            if action.default not in (None, False) and action.option_strings:
                shown = f"(default:{action.default})".replace(" ", "")
                assert shown in "".join(text.split()), (name, action.dest)  # wrapping ignored


def test_export_objects_runs_the_same_as_the_module(tmp_path, monkeypatch):
    from lmcsds.priors import objects_data

    monkeypatch.setattr(objects_data, "export_pngs", lambda split, views, out: (split, views, out))
    calls = []
    monkeypatch.setattr("builtins.print", lambda *a: calls.append(a[0]))
    main(["export-objects", "--split", "heldout", "--views", "3", "--out", str(tmp_path)])
    objects_data.main(["--split", "heldout", "--views", "3", "--out", str(tmp_path)])
    assert calls[0] == calls[1] == f"('heldout', 3, '{tmp_path}') images written to {tmp_path}"


def test_a_command_whose_extra_is_missing_says_which_to_install(monkeypatch, capsys):
    real_import = importlib.import_module

    def without_matplotlib(name, *args):
        if name == "lmcsds.evaluation.compare":
            raise ModuleNotFoundError("No module named 'matplotlib'", name="matplotlib")
        return real_import(name, *args)

    monkeypatch.setattr(importlib, "import_module", without_matplotlib)
    assert "[not installed: matplotlib]" in _subparsers(build_parser())["compare"].description
    with pytest.raises(SystemExit) as exit_:
        main(["compare", "--threestudio", ".", "--steps", "3"])  # its flags are not parsed
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "lmcsds compare needs matplotlib (No module named 'matplotlib'): "
        "pip install 'threestudio-lmcsds[eval]'"
    ]
    with pytest.raises(SystemExit):  # an installed command still refuses unknown flags
        main(["term-bias", "--no-such-flag"])
