"""The one platform matcher, held to containerd's platforms_test.go cases."""

from __future__ import annotations

import pytest

from occystrap_core.errors import URIError
from occystrap_core.oci.platform import Platform, best, describe, matches, of_descriptor, parse

# TestParseSelector (the OS/ARCH[/VARIANT] forms): input, what it means, and other
# spellings the matcher must take for the same platform.
SELECTORS = [
    ("linux/arm64", ("linux", "arm64", None),
     [("linux", "aarch64", None), ("linux", "aarch64", "v8"), ("linux", "arm64", "v8")]),
    ("linux/arm64/v8", ("linux", "arm64", "v8"),
     [("linux", "aarch64", None), ("linux", "aarch64", "v8"), ("linux", "arm64", None)]),
    ("linux/arm", ("linux", "arm", None),
     [("linux", "arm", "v7"), ("linux", "armhf", None), ("linux", "arm", "7")]),
    ("linux/arm/v6", ("linux", "arm", "v6"), [("linux", "armel", None)]),
    ("linux/arm/v7", ("linux", "arm", "v7"), [("linux", "arm", None), ("linux", "armhf", None)]),
    ("Linux/x86_64", ("Linux", "x86_64", None), [("linux", "amd64", None),
                                                 ("linux", "amd64", "v1")]),
    ("linux/s390x", ("linux", "s390x", None), []),
    ("linux/i386", ("linux", "i386", None), [("linux", "386", None)]),
    ("macOS/arm64", ("macOS", "arm64", None), [("darwin", "arm64", None)]),
]


@pytest.mark.parametrize("text, parsed, others", SELECTORS)
def test_spellings_of_one_platform_match(text, parsed, others):
    platform = parse(text)
    assert platform == Platform(*parsed)
    for other in [parsed, *others]:
        assert matches(platform, Platform(*other)), other
        assert matches(Platform(*other), platform), other


@pytest.mark.parametrize("text", ["", "/linux/arm", "linux/arm/", "linux /arm", "linux/&arm",
                                  "linux/arm/foo/bar", "linux"])
def test_invalid_selectors(text):
    """TestParseSelectorInvalid; a bare OS is refused too (say OS/ARCH)."""
    with pytest.raises(URIError):
        parse(text)


@pytest.mark.parametrize("a, b", [
    (("linux", "amd64", None), ("linux", "arm64", None)),
    (("linux", "arm", "v7"), ("linux", "arm", "v6")),
    (("linux", "amd64", None), ("windows", "amd64", None)),
    (("linux", "arm64", None), ("linux", "arm", "v8")),
])
def test_different_platforms_do_not_match(a, b):
    assert not matches(Platform(*a), Platform(*b))


def test_best_prefers_exact_then_compatible():
    available = [Platform("linux", "arm", "v5"), Platform("linux", "arm", "v6"),
                 Platform("linux", "amd64"), None]
    assert best(Platform("linux", "arm", "v7"), available) == 1  # v6 before v5
    assert best(Platform("linux", "arm", "v6"), available) == 1
    assert best(Platform("linux", "arm64"), available) is None
    assert best(Platform("linux", "x86_64"), available) == 2
    assert best(Platform("linux", "amd64", "v3"), available) == 2
    assert best(Platform("linux", "arm64", "v9"), [Platform("linux", "aarch64")]) == 0


def test_descriptors_and_attestations():
    assert of_descriptor({"platform": {"os": "linux", "architecture": "arm64",
                                       "variant": "v8"}}) == Platform("linux", "arm64", "v8")
    assert of_descriptor({"platform": {"os": "unknown", "architecture": "unknown"}}) is None
    assert of_descriptor({}) is None
    assert describe([Platform("linux", "amd64"), None, Platform("linux", "amd64")]) == \
        "linux/amd64"
