"""The shape of the CLI package: one place adds the commands, each a module-level function, no import cycle.

These are the rules of :mod:`ztfcat.cli.root` that keep a new command a function plus one line:
every command of ``ztfcat`` is a plain module-level click command of one command module, listed in
``COMMANDS``, reachable and with its help; no command module imports the root (they share
:mod:`ztfcat.cli.common`), no command is a closure; and the store sits below the catalog (no module of
``ztfcat.store`` imports ``ztfcat.catalog``, which was a cycle for one constant).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from ztfcat.cli.root import COMMANDS, main

PACKAGE = Path(__file__).resolve().parents[1] / "ztfcat"
CLI_MODULES = sorted(p for p in (PACKAGE / "cli").glob("*.py"))


def _walk(command: click.Command, path: tuple[str, ...] = ()):
    yield path, command
    if isinstance(command, click.Group):
        for name in sorted(command.commands):
            yield from _walk(command.commands[name], (*path, name))


def _imports(path: Path) -> set[str]:
    """Every ``ztfcat`` module ``path`` imports, at the top or inside a function, as dotted names."""
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    package = parts[:-1] if parts[-1] != "__init__" else parts[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name == "ztfcat" or name.startswith("ztfcat.")}


def test_every_command_is_listed_once_and_added_by_the_root():
    names = [command.name for command in COMMANDS]
    assert len(names) == len(set(names))
    assert set(main.commands) == set(names)
    for command in COMMANDS:
        assert main.commands[command.name] is command


def test_every_command_is_a_module_level_function_of_a_command_module():
    for path, command in _walk(main):
        if not path:
            continue
        module = sys.modules[command.callback.__module__]
        assert module.__name__.startswith("ztfcat.cli.") and module.__name__ != "ztfcat.cli.root", path
        assert getattr(module, command.callback.__name__) is command, path
        assert "<locals>" not in command.callback.__qualname__, path


def test_every_command_answers_help():
    runner = CliRunner()
    walked = list(_walk(main))
    assert len(walked) > len(COMMANDS)  # the root, every command, and db's subcommands
    for path, command in walked:
        result = runner.invoke(main, [*path, "--help"], prog_name="ztfcat")
        assert result.exit_code == 0, (path, result.output)
        assert result.output.startswith(f"Usage: {' '.join(('ztfcat', *path))} ")
        assert command.help and command.get_short_help_str(), path
        assert "-h, --help" in result.output, path


@pytest.mark.parametrize("path", CLI_MODULES, ids=lambda p: p.stem)
def test_no_closures_no_register_and_no_import_of_the_root(path: Path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            assert node.name != "register", path
            inner = [n for n in ast.walk(node) if n is not node and isinstance(n, ast.FunctionDef)]
            assert not inner, f"{path.name}: {node.name} defines a function inside it"
    if path.stem != "root":
        assert "ztfcat.cli.root" not in _imports(path), path


def test_the_cli_package_has_no_import_cycle():
    graph = {f"ztfcat.cli.{p.stem}": _imports(p) for p in CLI_MODULES}
    graph = {name: {m for m in found if m in graph and m != name} for name, found in graph.items()}
    done: set[str] = set()

    def visit(name: str, stack: tuple[str, ...]) -> None:
        assert name not in stack, " -> ".join((*stack, name))
        if name in done:
            return
        for imported in graph[name]:
            visit(imported, (*stack, name))
        done.add(name)

    for name in graph:
        visit(name, ())


def test_the_store_does_not_import_the_catalog():
    for path in (PACKAGE / "store").glob("*.py"):
        assert "ztfcat.catalog" not in _imports(path), path


@pytest.mark.parametrize("path", CLI_MODULES, ids=lambda p: p.stem)
def test_each_cli_module_imports_alone(path: Path):
    module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    result = subprocess.run(
        [sys.executable, "-c", f"import {module}"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
