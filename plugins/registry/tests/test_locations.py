"""What a long-lived context (the proxy's, for days) knows of where blobs are: recent
facts only, and none trusted again once the registry says otherwise."""

from __future__ import annotations

from typing import Callable

import pytest

from occystrap_core import library
from occystrap_core.errors import TransportError
from occystrap_core.testing.http import FakeClock
from occystrap_core.testing.registry import RegistryServer, push_sample_image, remove_image
from occystrap_core.transport.clock import CLOCK_KEY
from occystrap_registry.locations import KEPT_FOR, TRUSTED_FOR, BlobLocations

A, B = "sha256:" + "a" * 64, "sha256:" + "b" * 64


def test_facts_are_trusted_then_only_offered_then_dropped() -> None:
    clock = FakeClock()
    locations = BlobLocations(clock)
    locations.add("r", "one", [A, B])
    locations.add("r", "two", [A])
    assert locations.holds("r", "one", A) and locations.repositories("r", A, "x") == ["one", "two"]
    clock.advance(TRUSTED_FOR / 2)
    locations.add("r", "one", [A])  # seen again: trusted for longer
    clock.advance(TRUSTED_FOR / 2 + 1)
    assert locations.holds("r", "one", A)
    assert not locations.holds("r", "two", A) and not locations.holds("r", "one", B)
    # no longer trusted without asking, still a place to mount from (the registry checks)
    assert locations.repositories("r", A, "x") == ["two", "one"]
    assert locations.known("r", B, "x")
    clock.advance(KEPT_FOR - TRUSTED_FOR)
    assert locations.repositories("r", A, "x") == ["one"] and not locations.known("r", B, "x")
    locations.add("r", "three", ["sha256:" + "c" * 64])  # a later add drops what expired
    assert len(locations) == 2
    clock.advance(KEPT_FOR)
    locations.add("r", "four", [])
    assert len(locations) == 0


def test_forgotten_facts_are_asked_again() -> None:
    locations = BlobLocations(FakeClock())
    locations.add("r", "one", [A, B])
    locations.add("r", "two", [A])
    locations.forget("r", "one", [A])
    assert not locations.holds("r", "one", A) and locations.holds("r", "one", B)
    assert locations.repositories("r", A, "x") == ["two"]


def test_a_session_whose_blobs_were_removed_sends_them_again(
        registry_plain: RegistryServer, repo_name: Callable[[str], str]) -> None:
    """The second copy of one session trusts what the first saw, and the registry says
    a blob is missing: it fails as worth trying again, and the next try sends it."""
    server = registry_plain
    src, dst = repo_name("loc/src"), repo_name("loc/dst")
    push_sample_image(server, src, "v1")
    source, destination = f"registry://{server.host}/{src}:v1", f"registry://{server.host}/{dst}:v1"
    with library.session(insecure=True) as session:
        library.copy(source, destination, session=session)
        remove_image(server, dst, "v1")
        with pytest.raises(TransportError) as failed:
            library.copy(source, destination, session=session)
        assert failed.value.retryable and "MANIFEST_BLOB_UNKNOWN" in str(failed.value)
        assert "trying again sends it" in str(failed.value)
        result = library.copy(source, destination, session=session)
    assert result.problems == []
    assert library.check(destination, insecure=True).count("error") == 0


def test_a_session_asks_again_once_its_facts_are_old(
        registry_plain: RegistryServer, repo_name: Callable[[str], str]) -> None:
    server = registry_plain
    src, dst = repo_name("loc/src"), repo_name("loc/dst")
    push_sample_image(server, src, "v1")
    source, destination = f"registry://{server.host}/{src}:v1", f"registry://{server.host}/{dst}:v1"
    clock = FakeClock()
    with library.session(insecure=True) as session:
        session.shared(CLOCK_KEY, lambda: clock)
        library.copy(source, destination, session=session)
        remove_image(server, dst, "v1")
        clock.advance(TRUSTED_FOR + 1)
        assert library.copy(source, destination, session=session).problems == []
    assert library.check(destination, insecure=True).count("error") == 0
