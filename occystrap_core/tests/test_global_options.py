"""Plugins' global options: on the command line, in Settings, redacted, conflicts named."""

from __future__ import annotations

import re
from typing import Any

import pytest

from occystrap_core import globalopts, hookimpl, plugins, redact
from occystrap_core.context import Context, Settings
from occystrap_core.errors import UsageError
from occystrap_core.testing import FakeEntryPoint, plugin_module
from occystrap_core.types import GlobalOption, InputSource


def _options_plugin(*options: GlobalOption) -> Any:
    @hookimpl
    def occystrap_global_options():
        return options

    return plugin_module(occystrap_global_options)


def _echo_plugin() -> Any:
    """``show://`` fails with an error quoting the run's plugin options."""

    def factory(uri: Any, ctx: Context) -> Any:
        values = ", ".join(f"{k}={v!r}" for k, v in sorted(ctx.settings.plugin_options.items()))
        raise UsageError(f"plugin options: {values}")

    @hookimpl
    def occystrap_input_sources():
        yield InputSource(name="show", schemes=("show",), summary="", factory=factory)

    @hookimpl
    def occystrap_global_options():
        yield GlobalOption(name="acme-token", envvar="ACME_TOKEN", secret=True,
                           help="Acme API token (acme:// sources).")
        yield GlobalOption(name="acme-level", envvar="ACME_LEVEL", type=int, default=3,
                           help="Acme compression level.", metavar="N")
        yield GlobalOption(name="acme-fast", envvar="ACME_FAST", type=bool, help="Go fast.")

    return plugin_module(occystrap_input_sources, occystrap_global_options)


@pytest.fixture
def echo(register_plugin: Any, run_cli: Any) -> Any:
    register_plugin(_echo_plugin(), name="occystrap-acme")

    def run(*args: str, env: dict[str, str] | None = None) -> str:
        result = run_cli(*args, "info", "show://x", env=env)
        assert result.exit_code == 1, result.output
        return result.stderr

    return run


def test_options_are_in_the_help(echo: Any, run_cli: Any) -> None:
    shown = run_cli("--help")
    assert shown.exit_code == 0
    assert re.search(r"--acme-token TEXT\s+Acme API token \(acme:// sources\)\.", shown.stdout)
    assert re.search(r"--acme-level N\s+Acme compression level\.", shown.stdout)
    assert re.search(r"--acme-fast\s+Go fast\.", shown.stdout)
    assert shown.stdout.index("--acme-fast") < shown.stdout.index("-h, --help")


def test_values_from_option_environment_or_default(echo: Any) -> None:
    assert "acme-fast=False, acme-level=3, acme-token=None" in echo()
    assert "acme-fast=True, acme-level=9, acme-token=None" in echo(
        "--acme-level", "9", "--acme-fast")
    assert "acme-fast=True, acme-level=7, acme-token=None" in echo(
        env={"ACME_LEVEL": "7", "ACME_FAST": "1"})
    assert "acme-level=5" in echo("--acme-level", "5", env={"ACME_LEVEL": "7"})


def test_bad_value_is_a_usage_error(echo: Any, run_cli: Any) -> None:
    result = run_cli("--acme-level", "lots", "info", "show://x")
    assert result.exit_code == 2
    assert "Invalid value for '--acme-level': 'lots' is not a valid integer" in result.stderr


def test_secret_values_never_reach_output(echo: Any) -> None:
    for stderr in (echo("--acme-token", "tok-from-option"),
                   echo(env={"ACME_TOKEN": "tok-from-environment"})):
        assert "acme-token='REDACTED'" in stderr
        assert "tok-from" not in stderr
    assert redact.redact_text("tok-from-option tok-from-environment") == "REDACTED REDACTED"


def test_context_registers_secret_options_given_directly() -> None:
    loaded = plugins.load_plugins(entry_points=[FakeEntryPoint("occystrap-acme", _echo_plugin())],
                                  strict=True)
    settings = Settings(plugin_options={"acme-token": "direct-secret", "acme-level": 12345})
    with Context(settings, loaded):
        assert redact.redact_text("direct-secret 12345") == "REDACTED 12345"


def test_name_claimed_twice_is_an_error_naming_both(register_plugin: Any, run_cli: Any) -> None:
    option = GlobalOption(name="acme-token", help="token")
    register_plugin(_options_plugin(option), name="occystrap-one")
    register_plugin(_options_plugin(option), name="occystrap-two", version="2.0")
    result = run_cli("plugins", "list")
    assert result.exit_code == 1
    assert re.fullmatch(r"Error: global option 'acme-token' is claimed by both (occystrap-\S+ "
                        r"\S+) and (occystrap-\S+ \S+); disable one with --disable-plugin\n",
                        result.stderr)
    assert "occystrap-one 1.0" in result.stderr and "occystrap-two 2.0" in result.stderr
    # --disable-plugin is read before the options are: it is the way out
    assert run_cli("--disable-plugin", "occystrap-two", "plugins", "list").exit_code == 0


def test_core_option_name_is_refused(register_plugin: Any, run_cli: Any) -> None:
    register_plugin(_options_plugin(GlobalOption(name="no-verify", help="mine")),
                    name="occystrap-greedy")
    result = run_cli("plugins", "list")
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: global option --no-verify is claimed by both "
                                    "occystrap-core 0.5.0 and occystrap-greedy 1.0")


def test_broken_hook_warns_and_the_rest_works(register_plugin: Any, run_cli: Any) -> None:
    @hookimpl
    def occystrap_global_options():
        raise RuntimeError("options are hard")

    register_plugin(plugin_module(occystrap_global_options), name="occystrap-broken")
    result = run_cli("--help")
    assert result.exit_code == 0
    assert "--quay-token" in result.stdout
    assert result.stderr == ("Warning: plugin occystrap-broken 1.0 failed to load "
                             "(RuntimeError: options are hard); disable it with "
                             "--disable-plugin occystrap-broken\n")


@pytest.mark.parametrize("kwargs, message", [
    ({"name": "Acme_Token"}, "invalid global option name 'Acme_Token'"),
    ({"name": "acme", "envvar": "ACME-TOKEN"}, "invalid envvar 'ACME-TOKEN'"),
    ({"name": "acme", "type": list}, "type must be str, int, float or bool"),
])
def test_invalid_option_fails_its_plugin(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        GlobalOption(help="", **kwargs)


def test_disabled_plugins_are_read_before_parsing() -> None:
    args = ["-v", "--disable-plugin", "a", "--disable-plugin=b", "process", "--",
            "--disable-plugin", "c"]
    assert globalopts.disabled_in(args) == ["a", "b"]
    assert globalopts.disabled_in(["--disable-plugin"]) == [""]


def test_empty_path_variables_are_unset(run_cli: Any, tmp_path: Any) -> None:
    """``--layer-cache ""`` is refused (tests/test_bad_input.py); an empty environment
    variable is unset, as click reads every one: no cache, the default temp dir."""
    from occystrap_core.testing import images

    images.write_docker_archive(str(tmp_path / "in.tar"),
                                [images.sample_image("example.com/a/b", "v1")])
    empty = {name: "" for name in ("OCCYSTRAP_LAYER_CACHE", "OCCYSTRAP_TEMP_DIR",
                                   "OCCYSTRAP_CA_CERT", "OCCYSTRAP_CLIENT_CERT",
                                   "OCCYSTRAP_CLIENT_KEY")}
    result = run_cli("process", f"tar://{tmp_path / 'in.tar'}", f"tar://{tmp_path / 'out.tar'}",
                     env=empty)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.tar", "out.tar"]
