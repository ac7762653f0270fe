"""quay:// URI parsing, glob and date filtering, and the API client on a mock network."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from occystrap_core.errors import AuthError, TransportError, URIError
from occystrap_core.testing.http import FakeClock, MockHTTP, make_context
from occystrap_quay import plugin
from occystrap_quay.client import QuayAPI
from occystrap_quay.source import Selection, parse_since, parse_target, select_tags

JAN_6 = 1704499200  # 2024-01-06T00:00:00Z


@pytest.mark.parametrize("target, expected", [
    ("acme", ("acme", "*", "latest")),
    ("acme/", ("acme", "*", "latest")),
    ("acme/app-*", ("acme", "app-*", "latest")),
    ("acme/app:1.*", ("acme", "app", "1.*")),
    ("acme/*:*", ("acme", "*", "*")),
    ("my_org.x/[ab]*:v?", ("my_org.x", "[ab]*", "v?")),
])
def test_parse_target(target: str, expected: tuple[str, str, str]) -> None:
    assert parse_target(target) == expected


@pytest.mark.parametrize("target", ["", "Acme/app", "ac*/app", "acme/a/b", "acme/app:",
                                    "acme/:1.0"])
def test_parse_target_rejects(target: str) -> None:
    with pytest.raises(URIError):
        parse_target(target)


def test_parse_since() -> None:
    assert parse_since(None) is None
    assert parse_since("2024-01-06") == JAN_6
    assert parse_since("2024-01-06T01:00:00+01:00") == JAN_6
    with pytest.raises(URIError, match="not a date"):
        parse_since("last week")


def test_repositories_match_by_glob_and_date() -> None:
    sel = Selection("acme", "app-[0-4]*", "*", since=JAN_6)
    repos = [{"name": "app-1", "last_modified": JAN_6},
             {"name": "app-2", "last_modified": JAN_6 - 1},
             {"name": "app-3", "last_modified": None}, {"name": "web", "last_modified": JAN_6},
             {"name": "APP-1", "last_modified": JAN_6}, {"last_modified": JAN_6}]
    assert [r.get("name") for r in repos if sel.repo_matches(r)] == ["app-1"]
    no_date = Selection("acme", "app-*", "*")
    assert [r["name"] for r in repos[:4] if no_date.repo_matches(r)] == ["app-1", "app-2", "app-3"]


def test_tags_match_by_glob_and_date_sorted_once() -> None:
    tags = [{"name": "v2", "start_ts": JAN_6}, {"name": "v1", "start_ts": JAN_6 + 5},
            {"name": "v1", "start_ts": JAN_6 + 5}, {"name": "old", "start_ts": JAN_6 - 1},
            {"name": "latest", "start_ts": JAN_6}, {"name": "v3"}]
    assert select_tags(tags, Selection("acme", "*", "v*", since=JAN_6)) == ["v1", "v2"]
    assert select_tags(tags, Selection("acme", "*", "v*")) == ["v1", "v2", "v3"]
    assert select_tags(tags, Selection("acme", "*", "*")) == ["latest", "old", "v1", "v2", "v3"]


def test_resolve_moves_the_token_out_of_sight() -> None:
    resolved = plugin.occystrap_resolve_uri("quay://acme/app-*:*?token=s3cret&since=2024-01-06")
    assert resolved is not None
    assert resolved.credentials is not None and resolved.credentials.token == "s3cret"
    assert "token" not in resolved.query and resolved.query["since"] == ("2024-01-06",)
    assert "s3cret" not in resolved.raw + repr(resolved)
    assert plugin.occystrap_resolve_uri("registry://quay.io/acme/app") is None


class FakeAPI:
    """Answers like Quay: two pages of repositories, tags a page at a time."""

    def __init__(self) -> None:
        self.seen: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        q = request.url.params
        if request.url.path == "/api/v1/repository":
            if q.get("next_page") == "p2":
                return httpx.Response(200, json={"repositories": [{"name": "c"}]})
            return httpx.Response(200, json={"repositories": [{"name": "a"}, {"name": "b"}],
                                             "next_page": "p2"})
        if request.url.path == "/api/v1/repository/acme/a/tag/":
            page = int(q["page"])
            return httpx.Response(200, json={"tags": [{"name": f"t{page}"}], "page": page,
                                             "has_additional": page < 3})
        return httpx.Response(404, json={"error_message": "Not Found"})


def _api(handler: Any, token: str | None = None, **settings: Any) -> QuayAPI:
    ctx = make_context(MockHTTP(handler), plugin, clock=FakeClock(), **settings)
    return QuayAPI(ctx, "quay.example", token=token)


def test_client_paginates_and_sends_the_token() -> None:
    fake = FakeAPI()
    api = _api(fake, token="tok")
    assert [r["name"] for r in api.repositories("acme")] == ["a", "b", "c"]
    assert [t["name"] for t in api.tags("acme", "a")] == ["t1", "t2", "t3"]
    first = fake.seen[0]
    assert str(first.url).startswith("https://quay.example/api/v1/repository?")
    assert first.url.params["namespace"] == "acme" and first.url.params["last_modified"] == "true"
    assert all(r.headers["Authorization"] == "Bearer tok" for r in fake.seen)
    assert [r.url.params["page"] for r in fake.seen[2:]] == ["1", "2", "3"]
    assert fake.seen[2].url.params["onlyActiveTags"] == "true"


def test_client_stops_on_a_repeated_cursor() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"repositories": [{"name": "a"}], "next_page": "same"})

    assert len(list(_api(handler).repositories("acme"))) == 2


def test_client_errors_name_the_quay_host() -> None:
    def status(code: int) -> Any:
        return lambda request: httpx.Response(code, json={"error_message": "nope"})

    with pytest.raises(AuthError, match=r"^quay API at quay.example: listing repositories of "
                                        r"acme: HTTP 401 Unauthorized: nope \(no token given"):
        list(_api(status(401)).repositories("acme"))
    with pytest.raises(TransportError, match=r"HTTP 503 .* nope$"):
        list(_api(status(503), retries=1).repositories("acme"))
    with pytest.raises(TransportError, match="is quay.example a Quay server"):
        list(_api(lambda request: httpx.Response(200, text="<html>")).repositories("acme"))
    with pytest.raises(TransportError, match="has no 'tags' list"):
        list(_api(lambda request: httpx.Response(200, json={})).tags("acme", "a"))


def test_api_calls_are_retried_by_the_core() -> None:
    answers = [httpx.Response(503), httpx.Response(200, json={"repositories": []})]
    clock = FakeClock()
    ctx = make_context(MockHTTP(lambda request: answers.pop(0)), plugin, clock=clock,
                       retries=2)
    assert list(QuayAPI(ctx, "quay.example").repositories("acme")) == []
    assert ctx.stats["retries"] == 1 and clock.sleeps
