"""KeyedLocks: one holder per key at a time, and nothing kept once a key is unused."""

from __future__ import annotations

import threading

import pytest

from occystrap_core.keyedlocks import KeyedLocks


def test_one_holder_per_key_and_forgotten_after() -> None:
    locks: KeyedLocks[tuple[str, str]] = KeyedLocks()
    inside, release = threading.Event(), threading.Event()
    order: list[str] = []

    def first() -> None:
        with locks.hold(("app", "sha256:m")):
            order.append("first in")
            inside.set()
            release.wait(10)
            order.append("first out")

    def second() -> None:
        inside.wait(10)
        with locks.hold(("app", "sha256:m")):
            order.append("second in")

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    inside.wait(10)
    with locks.hold(("app", "v1")):  # another key is not waited for
        assert len(locks) == 2
    release.set()
    for thread in threads:
        thread.join(10)
    assert order == ["first in", "first out", "second in"]
    assert len(locks) == 0  # a long-lived run keeps no lock it no longer uses


def test_a_holder_that_fails_releases_its_key() -> None:
    locks: KeyedLocks[str] = KeyedLocks()
    with pytest.raises(RuntimeError), locks.hold("k"):
        raise RuntimeError("failed inside")
    assert len(locks) == 0
    with locks.hold("k"):  # not left locked
        assert len(locks) == 1
