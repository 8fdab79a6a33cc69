"""The ``llmcanary`` command (also installed as the kubectl plugin ``kubectl-llmcanary``).

Its own commands are the operator's (``run``, ``crd``, ``preflight``) and the user's
(``status``, ``promote``, ... from :mod:`llmcanary.cli.control`). Other installed
distributions add commands through the ``llmcanary.commands`` entry-point group, each entry
point a click command named as the entry point: the development stack (``llmcanary-dev``,
``dev/``) adds ``devcluster``, ``stack``, ``demo`` and ``bench`` this way, so the operator's
own install (the image) has none of them. Plugin commands are imported only when listed
(``--help``) or called; one that fails to load is shown as broken, naming its entry point,
and the other commands still work. A plugin cannot replace a built-in command.
"""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points
from typing import Any

import click

from llmcanary.cli.control import COMMANDS, PluginAwareGroup
from llmcanary.cli.crd import crd
from llmcanary.cli.preflight import preflight
from llmcanary.cli.run import run

__all__ = ["PLUGIN_GROUP", "CommandGroup", "main"]

PLUGIN_GROUP = "llmcanary.commands"


def _broken(entry_point: EntryPoint, reason: str) -> click.Command:
    """Stands in for a plugin command that cannot be loaded: says why, exits 1."""
    message = (
        f"the command {entry_point.name!r} (entry point {entry_point.value!r} in group"
        f" {PLUGIN_GROUP!r}) cannot be loaded: {reason}"
    )

    def fail(**_: Any) -> None:
        raise click.ClickException(message)

    return click.Command(
        entry_point.name,
        callback=fail,
        help=f"[broken] {message}",
        short_help=f"[broken: cannot load {entry_point.value}]",
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    )


def load_plugin(entry_point: EntryPoint) -> click.Command:
    """The click command an entry point names, or a stand-in that reports why it is not."""
    try:
        command = entry_point.load()
    except Exception as exc:  # any import-time failure of someone else's package
        return _broken(entry_point, f"{type(exc).__name__}: {exc}")
    if not isinstance(command, click.Command):
        return _broken(entry_point, f"it is a {type(command).__name__}, not a click command")
    return command


class CommandGroup(PluginAwareGroup):
    """The built-in commands, then those of the ``llmcanary.commands`` entry points."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._plugins: dict[str, EntryPoint] | None = None
        self._loaded: dict[str, click.Command] = {}

    def plugins(self) -> dict[str, EntryPoint]:
        """The group's entry points by name, read once; built-in names win."""
        if self._plugins is None:
            found = {ep.name: ep for ep in entry_points(group=PLUGIN_GROUP)}
            self._plugins = {n: ep for n, ep in found.items() if n not in self.commands}
        return self._plugins

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.plugins()})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            return command
        entry_point = self.plugins().get(cmd_name)
        if entry_point is None:
            return None
        if cmd_name not in self._loaded:
            self._loaded[cmd_name] = load_plugin(entry_point)
        return self._loaded[cmd_name]


@click.group(cls=CommandGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="llmcanary")
def main() -> None:
    """Canary rollouts of LLMs served by NVIDIA Triton."""


main.add_command(run)
main.add_command(crd)
main.add_command(preflight)
for command in COMMANDS:
    main.add_command(command)
