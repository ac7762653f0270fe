import pytest

from occystrap_tarball.references import join_reference, split_reference


@pytest.mark.parametrize("ref, expected", [
    ("app:v1", ("app", "v1")),
    ("app", ("app", None)),
    ("127.0.0.1:5000/team/app:tag", ("127.0.0.1:5000/team/app", "tag")),
    ("127.0.0.1:5000/team/app", ("127.0.0.1:5000/team/app", None)),
    ("example.com/a/b:v1@sha256:" + "0" * 64, ("example.com/a/b", "v1")),
])
def test_split_reference(ref, expected):
    assert split_reference(ref) == expected


def test_join_reference():
    assert join_reference("a/b", "1") == "a/b:1"
    assert join_reference("a/b", None) == "a/b"
    assert join_reference(None, "1") is None
