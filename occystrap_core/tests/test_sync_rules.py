"""sync's tag rules and shard split, without a registry."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from occystrap_core.errors import UsageError
from occystrap_core.sync.command import parse_shard
from occystrap_core.sync.plan import full_pattern, shard_of, with_query
from occystrap_core.sync.rules import SemverRange, TagRules, Version

TAGS = ["v1.0.0", "v1.1.0", "1.2", "v1.2.1-rc.1", "v1.2.1", "v2.0.0", "latest", "dev-a"]


def test_versions_order_with_pre_releases_first() -> None:
    versions = [v for t in ("1.2.1", "v1.2.1-rc.1", "1.2", "v1.10.0") if (v := Version.parse(t))]
    assert len(versions) == 4
    assert sorted(versions) == [versions[2], versions[1], versions[0], versions[3]]
    assert Version.parse("latest") is None and Version.parse("1.2.3.4") is None


@pytest.mark.parametrize("rules, kept", [
    (TagRules(), sorted(TAGS)),
    (TagRules(include=("v1.*",), exclude=("*-rc*",)), ["v1.0.0", "v1.1.0", "v1.2.1"]),
    (TagRules(regex=re.compile(r"^v\d+\.\d+\.\d+$")),
     ["v1.0.0", "v1.1.0", "v1.2.1", "v2.0.0"]),
    (TagRules(semver=SemverRange.parse(">=1.1,<2")), ["1.2", "v1.1.0", "v1.2.1",
                                                      "v1.2.1-rc.1"]),
    (TagRules(latest=2), ["v1.2.1", "v2.0.0"]),
    (TagRules(semver=SemverRange.parse("<2"), exclude=("*-rc*",), latest=1), ["v1.2.1"]),
])
def test_rules_select(rules: TagRules, kept: list[str]) -> None:
    assert rules.select(TAGS) == kept


def test_scope_ignores_latest_n() -> None:
    rules = TagRules(include=("v*",), latest=1)
    assert rules.in_scope("v1.0.0") and not rules.in_scope("latest")


def test_below_a_release_is_not_its_pre_releases() -> None:
    """``<2`` is the 1.x line: 2.0.0-rc.1 sorts before 2.0.0 but is not below it;
    below a pre-release, the earlier pre-releases are."""
    in_range = SemverRange.parse(">=1.2,<2").contains
    assert in_range("v1.9.0") and in_range("1.2.1-rc.1")
    assert not in_range("v2.0.0-rc.1") and not in_range("2.0.0-beta")
    assert SemverRange.parse("<2.0.0-rc.2").contains("2.0.0-rc.1")
    assert SemverRange.parse("<=2").contains("2.0.0-rc.1")


@pytest.mark.parametrize("text", ["1.2", ">=x", ">=1,,<2"])
def test_bad_semver_ranges(text: str) -> None:
    if text == "1.2":
        assert SemverRange.parse(text).contains("v1.2.0")  # a bare version means ==
        return
    with pytest.raises(UsageError, match="is not a comparison"):
        SemverRange.parse(text)


def test_shards_split_every_repository_once() -> None:
    keys = [f"mirror/team/app-{i}" for i in range(200)]
    owners = [shard_of(k, 4) for k in keys]
    assert set(owners) == {0, 1, 2, 3}
    assert owners == [shard_of(k, 4) for k in keys]  # deterministic


def test_parse_shard(monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse_shard("2/5") == (2, 5) and parse_shard(None) is None
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "3")
    assert parse_shard("4") == (3, 4)
    for bad in ("5/5", "x/2", "-1/2"):
        with pytest.raises(UsageError):
            parse_shard(bad)
    monkeypatch.delenv("JOB_COMPLETION_INDEX")
    with pytest.raises(UsageError, match="JOB_COMPLETION_INDEX"):
        parse_shard("4")


def test_patterns_and_queries() -> None:
    assert full_pattern("registry://reg:5000") == "registry://reg:5000/*:*"
    assert full_pattern("registry://reg/team/app?insecure=true") == \
        "registry://reg/team/app:*?insecure=true"
    assert full_pattern("quay://ns/app-*:v1") == "quay://ns/app-*:v1"
    assert with_query("registry://r/a:1?insecure=true", insecure="false", platforms="a/b,c/d") \
        == "registry://r/a:1?insecure=true&platforms=a/b,c/d"


def test_latest_by_date_keeps_the_newest_dated_tags() -> None:
    rules = TagRules(latest=2, order="created")
    assert rules.by_date and rules.select(TAGS) == sorted(TAGS)  # every candidate
    when = datetime(2026, 1, 1, tzinfo=UTC)
    created = {"old": when - timedelta(days=9), "new": when, "mid": when - timedelta(days=1),
               "undated": None}
    assert rules.newest(created) == ["mid", "new"]
