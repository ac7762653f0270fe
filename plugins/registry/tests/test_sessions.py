"""The upload journal: what a later run keeps to resume, and what it cancels."""

from __future__ import annotations

import json
import time

from occystrap_registry.sessions import RESUME_FOR, Journal, state_dir

HOST = "registry.example:5000"


def _journal_of_a_dead_run(directory, *entries: dict, torn: bool = False) -> None:
    lines = [json.dumps(e) for e in entries] + (['{"open": "http://regis'] if torn else [])
    (directory / "registry.example_5000-1-dead.jsonl").write_text("\n".join(lines) + "\n")


def test_acknowledged_sessions_are_kept_the_others_cancelled(tmp_path):
    now = time.time()
    _journal_of_a_dead_run(
        tmp_path,
        {"open": "http://h/u/1"},  # never got a chunk through
        {"open": "http://h/u/2"},
        {"open": "http://h/u/2b", "repo": "a/b", "digest": "sha256:2", "offset": 10, "t": now},
        {"done": "http://h/u/2"},  # moved on: the newest location counts
        {"open": "http://h/u/3", "repo": "a/b", "digest": "sha256:3", "offset": 5,
         "t": now - RESUME_FOR - 1},  # too old: registries purge such sessions
        {"open": "http://h/u/4", "repo": "a/b", "digest": "sha256:4", "offset": 7, "t": now},
        {"done": "http://h/u/4"},  # finished
        torn=True)
    cancelled: list[str] = []
    journal = Journal(HOST, str(tmp_path))
    journal.sweep(lambda location: cancelled.append(location) or True)
    assert sorted(cancelled) == ["http://h/u/1", "http://h/u/3"]
    found = journal.take("a/b", "sha256:2")
    assert found is not None and (found.location, found.offset) == ("http://h/u/2b", 10)
    assert journal.take("a/b", "sha256:2") is None  # taken once
    assert journal.take("a/b", "sha256:4") is None
    # the dead run's file is gone; the kept session lives on in this run's journal
    journal.closed("http://h/u/2b")
    journal.close()
    assert list(tmp_path.iterdir()) == []


def test_unused_sessions_are_carried_over_for_the_next_run(tmp_path):
    _journal_of_a_dead_run(tmp_path, {"open": "http://h/u/9", "repo": "a/b",
                                      "digest": "sha256:9", "offset": 3, "t": time.time()})
    first = Journal(HOST, str(tmp_path))
    first.sweep(lambda location: True)
    first.close()  # pushed something else: the session stays on record
    second = Journal(HOST, str(tmp_path))
    second.sweep(lambda location: True)
    assert second.take("a/b", "sha256:9") is not None


def test_state_directory_choice(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("OCCYSTRAP_UPLOAD_STATE_DIR", raising=False)
    assert state_dir(None) == str(tmp_path / "xdg" / "occystrap" / "uploads")
    assert state_dir(str(tmp_path / "lc")) == str(tmp_path / "lc" / "uploads")
    monkeypatch.setenv("OCCYSTRAP_UPLOAD_STATE_DIR", str(tmp_path / "state"))
    assert state_dir(str(tmp_path / "lc")) == str(tmp_path / "state")
    assert (tmp_path / "state").is_dir()
