"""Plugins' commands (``occystrap_commands``): discovered, run with the run's Context,
conflicts named, a broken one a warning."""

from __future__ import annotations

from typing import Any

import click

from occystrap_core import hookimpl
from occystrap_core.context import Context
from occystrap_core.testing import plugin_module
from occystrap_core.types import CommandSpec


@click.command("hello")
@click.argument("who")
@click.pass_obj
def _hello(ctx: Context, who: str) -> None:
    """Greet WHO."""
    click.echo(f"hello {who}, retries={ctx.settings.retries}")


def _commands_plugin(name: str = "hello", factory: Any = lambda: _hello) -> Any:
    @hookimpl
    def occystrap_commands():
        yield CommandSpec(name=name, summary="Greet someone", factory=factory)

    return plugin_module(occystrap_commands)


def test_a_plugin_command_runs_with_the_global_options(register_plugin: Any,
                                                       run_cli: Any) -> None:
    register_plugin(_commands_plugin(), name="occystrap-hello")
    listed = run_cli("--help")
    assert listed.exit_code == 0 and "Greet someone" in listed.stdout  # the summary
    assert "Greet WHO." in run_cli("hello", "--help").stdout
    result = run_cli("--retries", "7", "hello", "world")
    assert result.exit_code == 0, result.output
    assert result.stdout == "hello world, retries=7\n"
    shown = run_cli("plugins", "list", "--json")
    assert any(p["commands"] == ["hello"] for p in __import__("json").loads(shown.stdout))


def test_a_name_the_core_has_is_a_conflict_naming_both(register_plugin: Any,
                                                        run_cli: Any) -> None:
    register_plugin(_commands_plugin("process"), name="occystrap-greedy")
    result = run_cli("info", "x://y")
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: command 'process' is claimed by both "
                                    "occystrap-core 0.5.0 and occystrap-greedy 1.0")
    assert run_cli("--disable-plugin", "occystrap-greedy", "plugins", "list").exit_code == 0


def test_a_name_two_plugins_claim_is_a_conflict(register_plugin: Any, run_cli: Any) -> None:
    register_plugin(_commands_plugin(), name="occystrap-one")
    register_plugin(_commands_plugin(), name="occystrap-two", version="2.0")
    result = run_cli("hello", "x")
    assert result.exit_code == 1
    assert "command 'hello' is claimed by both" in result.stderr
    assert "occystrap-one 1.0" in result.stderr and "occystrap-two 2.0" in result.stderr


def test_a_broken_command_warns_and_the_cli_works(register_plugin: Any, run_cli: Any) -> None:
    def broken() -> Any:
        raise ImportError("no module named acme_server")

    register_plugin(_commands_plugin(factory=broken), name="occystrap-broken")
    result = run_cli("hello", "x")
    assert result.exit_code == 2 and "No such command 'hello'" in result.stderr
    assert ("Warning: plugin occystrap-broken 1.0 failed to build command 'hello' "
            "(ImportError: no module named acme_server)") in result.stderr
    assert run_cli("--help").exit_code == 0
