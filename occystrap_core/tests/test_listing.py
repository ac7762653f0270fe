"""The core's listing: patterns, and the lister table's conflicts."""

from __future__ import annotations

import pytest

from occystrap_core import hookimpl, plugins
from occystrap_core.errors import PluginConflictError, URIError
from occystrap_core.listing import Pattern, split_pattern
from occystrap_core.testing import FakeEntryPoint, plugin_module
from occystrap_core.types import Lister
from occystrap_core.uri import has_pattern


@pytest.mark.parametrize("target, expected", [
    ("reg:5000/team/*:v1.*", Pattern("reg:5000", "team/*", "v1.*")),
    ("reg:5000/team/app", Pattern("reg:5000", "team/app", "*")),
    ("reg:5000", Pattern("reg:5000", "*", "*")),
    ("ns/app-*:latest", Pattern("ns", "app-*", "latest")),
])
def test_split_pattern(target: str, expected: Pattern) -> None:
    assert split_pattern(target) == expected


@pytest.mark.parametrize("target", ["reg/app:", "reg/app@sha256:00"])
def test_split_pattern_refuses(target: str) -> None:
    with pytest.raises(URIError, match="expected registry://ROOT"):
        split_pattern(target)


def test_has_pattern_looks_past_the_root_only() -> None:
    assert has_pattern("reg/app:*") and has_pattern("reg/te?m/app")
    assert not has_pattern("reg/app:v1") and not has_pattern("reg[1]")


def _lister_plugin() -> object:
    @hookimpl
    def occystrap_listers():
        yield Lister(name="mine", schemes=("registry",), summary="another catalog",
                     factory=lambda uri, ctx: None)

    return plugin_module(occystrap_listers)


def test_a_scheme_two_listers_claim_is_a_conflict_naming_both() -> None:
    loaded = plugins.load_plugins(entry_points=[
        FakeEntryPoint("one", _lister_plugin(), dist="occystrap-one"),
        FakeEntryPoint("two", _lister_plugin(), dist="occystrap-two", version="2.0")])
    with pytest.raises(PluginConflictError) as error:
        loaded.listers.get("registry")
    assert "lister 'registry' is claimed by both" in str(error.value)
    assert "occystrap-one 1.0" in str(error.value) and "occystrap-two 2.0" in str(error.value)
