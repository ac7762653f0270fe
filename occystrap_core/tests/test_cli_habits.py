"""Command-line habits: global options after the command, and the global ``-O``."""

from __future__ import annotations

import json
from typing import Any

import click
import pytest

from occystrap_core import hookimpl
from occystrap_core.context import Context
from occystrap_core.layercache import LayerCache
from occystrap_core.testing import plugin_module
from occystrap_core.testing.images import build_docker_archive
from occystrap_core.types import CommandSpec, GlobalOption


@click.command("show")
@click.argument("words", nargs=-1)
@click.option("--greeting", help="Takes a value.")
@click.option("--insecure", "own_insecure", is_flag=True, help="The command's own.")
@click.option("-O", "--output-format", "fmt", type=click.Choice(["text", "json"]),
              default="text")
@click.pass_obj
def _show(ctx: Context, words: tuple[str, ...], greeting: str | None, own_insecure: bool,
          fmt: str) -> None:
    """Print what the run was given."""
    s = ctx.settings
    click.echo(json.dumps({
        "words": list(words), "greeting": greeting, "own_insecure": own_insecure, "fmt": fmt,
        "insecure": s.insecure, "retries": s.retries, "parallel": s.parallel,
        "username": s.username, "verbose": s.verbose, "level": s.plugin_options["acme-level"],
        "disabled": list(s.disabled_plugins)}))


@pytest.fixture
def show(register_plugin: Any, run_cli: Any) -> Any:
    @hookimpl
    def occystrap_commands():
        yield CommandSpec(name="show", summary="Show the settings", factory=lambda: _show)

    @hookimpl
    def occystrap_global_options():
        yield GlobalOption(name="acme-level", type=int, default=3, help="A plugin's option.")

    register_plugin(plugin_module(occystrap_commands, occystrap_global_options),
                    name="occystrap-show")

    def run(*args: str) -> dict[str, Any]:
        result = run_cli(*args)
        assert result.exit_code == 0, result.output
        return dict(json.loads(result.stdout))

    return run


@pytest.mark.parametrize("args, expected", [
    (("show", "a", "--retries", "7", "b"), {"retries": 7, "words": ["a", "b"]}),
    (("show", "--retries=7", "a"), {"retries": 7, "words": ["a"]}),
    (("show", "a", "-j", "5", "-v"), {"parallel": 5, "verbose": True}),
    (("show", "a", "-j5"), {"parallel": 5}),
    (("show", "a", "--username", "u", "--acme-level", "9"), {"username": "u", "level": 9}),
    (("--retries", "1", "show", "--retries", "2"), {"retries": 2}),  # the last one, as click
    (("show", "--disable-plugin", "occystrap-quay"), {"disabled": ["occystrap-quay"]}),
    # a value that looks like an option stays the value
    (("show", "--greeting", "--retries", "a"), {"greeting": "--retries", "retries": 3,
                                                "words": ["a"]}),
    (("show", "--username", "--insecure"), {"username": "--insecure", "insecure": False}),
    # the command's own option of the same name stays the command's
    (("show", "--insecure"), {"own_insecure": True, "insecure": False}),
    (("--insecure", "show"), {"own_insecure": False, "insecure": True}),
    # -- ends the options: what follows is arguments
    (("show", "a", "--", "--retries", "7"), {"words": ["a", "--retries", "7"], "retries": 3}),
    (("show", "-", "--insecure"), {"words": ["-"], "own_insecure": True}),
])
def test_global_options_after_the_command(show: Any, args: tuple[str, ...],
                                          expected: dict[str, Any]) -> None:
    got = show(*args)
    assert {k: got[k] for k in expected} == expected


def test_help_and_unknown_options_after_the_command(show: Any, run_cli: Any) -> None:
    shown = run_cli("show", "--retries", "2", "--help")
    assert shown.exit_code == 0 and "Print what the run was given." in shown.stdout
    shown = run_cli("process", "--insecure", "--help")
    assert shown.exit_code == 0 and "Copy the image at SOURCE" in shown.stdout
    unknown = run_cli("show", "a", "--nope")
    assert unknown.exit_code == 2 and "No such option '--nope'" in unknown.stderr
    missing = run_cli("show", "a", "--retries")
    assert missing.exit_code == 2 and "'--retries' requires an argument" in missing.stderr
    bad = run_cli("show", "a", "--retries", "many")
    assert bad.exit_code == 2 and "'many' is not a valid integer" in bad.stderr


def test_nested_groups_take_global_options_after_the_command(tmp_path: Any,
                                                             run_cli: Any) -> None:
    cache = str(tmp_path / "cache")
    LayerCache(cache).close()  # the cache commands read a cache a copy made
    result = run_cli("cache", "info", "--layer-cache", cache, "-O", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["transforms"] == 0
    result = run_cli("cache", "--layer-cache", cache, "info")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("Path:")


def test_global_output_format_is_every_commands_default(show: Any, tmp_path: Any,
                                                        run_cli: Any) -> None:
    assert show("show")["fmt"] == "text"
    assert show("-O", "json", "show")["fmt"] == "json"
    assert show("--output-format=json", "show", "-O", "text")["fmt"] == "text"  # its own wins
    cache = str(tmp_path / "cache")
    LayerCache(cache).close()
    result = run_cli("-O", "json", "--layer-cache", cache, "cache", "info")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["transforms"] == 0
    archive = build_docker_archive(str(tmp_path / "a.tar"))["path"]
    result = run_cli("-O", "json", "info", f"tar://{archive}")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["layers"]
    # a command without -O accepts it (0.4.17 habits) and prints as it always does
    result = run_cli("search", f"tar://{archive}", "nothing-matches", "-O", "json")
    assert result.exit_code == 0, result.output
