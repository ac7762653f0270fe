import pytest

from occystrap_core.oci.reference import join_stored, split_stored


@pytest.mark.parametrize("ref, expected", [
    ("app:v1", ("app", "v1")),
    ("app", ("app", None)),
    ("127.0.0.1:5000/team/app:tag", ("127.0.0.1:5000/team/app", "tag")),
    ("127.0.0.1:5000/team/app", ("127.0.0.1:5000/team/app", None)),
    ("example.com/a/b:v1@sha256:" + "0" * 64, ("example.com/a/b", "v1")),
    ("Not A Name:x", ("Not A Name:x", None)),
])
def test_split_stored(ref: str, expected: tuple[str, str | None]) -> None:
    assert split_stored(ref) == expected


def test_join_stored() -> None:
    assert join_stored("a/b", "1") == "a/b:1"
    assert join_stored("a/b", None) == "a/b"
    assert join_stored(None, "1") is None
