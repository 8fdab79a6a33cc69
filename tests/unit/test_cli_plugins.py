"""The ``llmcanary.commands`` entry-point group: how llmcanary-dev (dev/) adds its commands.

In the development venv (make venv installs both distributions) ``llmcanary --help`` lists
the development commands; a plugin that cannot be loaded is named, not a traceback; and the
operator's own commands never import the development stack.
"""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import EntryPoint, entry_points

import click
import pytest
from click.testing import CliRunner

import llmcanary.cli
from llmcanary.cli import PLUGIN_GROUP, CommandGroup

DEV_COMMANDS = {"devcluster", "stack", "demo", "bench"}
OPERATOR_COMMANDS = {"run", "crd", "preflight"} | {c.name for c in llmcanary.cli.COMMANDS}


def listed_commands(help_text: str) -> set[str]:
    """The command names of click's "Commands:" section."""
    section = help_text.split("Commands:", 1)[1]
    return {line.split()[0] for line in section.splitlines() if line.startswith("  ")}


def test_the_dev_venv_help_lists_the_development_commands() -> None:
    # The installed console script, as a developer runs it (entry points from the metadata).
    done = subprocess.run(
        [sys.executable, "-m", "llmcanary", "--help"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert listed_commands(done.stdout) == OPERATOR_COMMANDS | DEV_COMMANDS, done.stdout


def test_llmcanary_dev_registers_each_command_under_its_own_name() -> None:
    ours = {
        ep.name: ep
        for ep in entry_points(group=PLUGIN_GROUP)
        if ep.dist is not None and ep.dist.name == "llmcanary-dev"
    }
    assert set(ours) == DEV_COMMANDS
    for name, ep in ours.items():
        command = ep.load()
        assert isinstance(command, click.Command), name
        assert command.name == name


def test_the_operator_commands_import_nothing_of_the_development_stack() -> None:
    # Plugins load when listed or called: `llmcanary run` in the dev venv stays the operator.
    # (Not aiohttp: kopf and the Kubernetes client depend on it.)
    code = (
        "import sys, llmcanary.cli, llmcanary.main\n"
        "llmcanary.cli.main.get_command(None, 'run')\n"
        "dev = ('llmcanary_dev', 'rich', 'cryptography')\n"
        "print(','.join(sorted(m for m in dev if m in sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == ""


@pytest.fixture
def group(monkeypatch: pytest.MonkeyPatch) -> click.Group:
    """A fresh command group whose entry points are a broken set."""
    fake = [
        EntryPoint(name="missing", value="no_such_module_here:command", group=PLUGIN_GROUP),
        EntryPoint(name="notacommand", value="os:sep", group=PLUGIN_GROUP),
        EntryPoint(name="run", value="no_such_module_here:run", group=PLUGIN_GROUP),
        EntryPoint(name="hello", value="tests_hello:hello", group=PLUGIN_GROUP),
    ]
    monkeypatch.setattr(llmcanary.cli, "entry_points", lambda group: fake)

    @click.command("hello")
    def hello() -> None:
        click.echo("hello from a plugin")

    monkeypatch.setitem(sys.modules, "tests_hello", type(sys)("tests_hello"))
    sys.modules["tests_hello"].hello = hello  # type: ignore[attr-defined]

    @click.group(cls=CommandGroup)
    def main() -> None:
        pass

    @main.command()
    def run() -> None:
        click.echo("the built-in run")

    return main


def test_a_broken_plugin_is_named_and_help_still_works(group: click.Group) -> None:
    shown = CliRunner().invoke(group, ["--help"])
    assert shown.exit_code == 0, shown.output
    assert listed_commands(shown.output) == {"hello", "missing", "notacommand", "run"}
    assert "[broken: cannot load no_such_module_here:command]" in shown.output
    assert "[broken: cannot load os:sep]" in shown.output

    called = CliRunner().invoke(group, ["missing", "--any", "arg"])
    assert called.exit_code == 1
    assert "entry point 'no_such_module_here:command' in group 'llmcanary.commands'" in (
        called.output
    )
    assert "ModuleNotFoundError" in called.output
    assert called.exception is None or isinstance(called.exception, SystemExit)

    wrong = CliRunner().invoke(group, ["notacommand"])
    assert wrong.exit_code == 1
    assert "it is a str, not a click command" in wrong.output


def test_plugins_run_and_cannot_replace_a_built_in_command(group: click.Group) -> None:
    assert CliRunner().invoke(group, ["hello"]).output == "hello from a plugin\n"
    assert CliRunner().invoke(group, ["run"]).output == "the built-in run\n"
