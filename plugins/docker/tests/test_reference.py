"""Docker-style references: a port is not a tag, digests are kept, names are checked."""

import pytest
from occystrap_core.errors import URIError

from occystrap_docker.reference import Reference, parse_reference

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize("text, expected, api", [
    ("busybox", Reference("busybox"), "busybox:latest"),
    ("busybox:1.36", Reference("busybox", "1.36"), "busybox:1.36"),
    ("localhost:5000/img", Reference("localhost:5000/img"), "localhost:5000/img:latest"),
    ("localhost:5000/team/img:v1", Reference("localhost:5000/team/img", "v1"),
     "localhost:5000/team/img:v1"),
    (f"img@{DIGEST}", Reference("img", None, DIGEST), f"img@{DIGEST}"),
    (f"reg.example/img:v2@{DIGEST}", Reference("reg.example/img", "v2", DIGEST),
     f"reg.example/img:v2@{DIGEST}"),
])
def test_parse(text, expected, api):
    ref = parse_reference(text, "docker")
    assert ref == expected
    assert str(ref) == api


def test_effective_tag():
    assert parse_reference("img", "docker").effective_tag == "latest"
    assert parse_reference(f"img@{DIGEST}", "docker").effective_tag is None


@pytest.mark.parametrize("text", ["", "Upper", "img:", "img:-bad", "a//b", "img@sha256:abc",
                                  "img:tag:more", "/abs", "x" * 256])
def test_rejects(text):
    with pytest.raises(URIError):
        parse_reference(text, "docker")
