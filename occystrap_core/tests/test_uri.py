"""Generic URI and filter-spec parsing, and option conversion without guessing."""

from __future__ import annotations

import re

import pytest

from occystrap_core.errors import URIError, UsageError
from occystrap_core.types import OptionSpec
from occystrap_core.uri import check_glob, convert_options, parse_uri, split_filter


def test_parse_uri_keeps_repeated_query_values_as_strings():
    r = parse_uri("TAR:///tmp/my%20image.tar?image=a:b&image=c&flag=1")
    assert r.scheme == "tar"
    assert r.target == "/tmp/my image.tar"
    assert r.query == {"image": ("a:b", "c"), "flag": ("1",)}


@pytest.mark.parametrize("bad", ["busybox:latest", "/tmp/x.tar", "", "://x"])
def test_parse_uri_rejects_non_uris(bad):
    with pytest.raises(URIError, match="is not a URI"):
        parse_uri(bad)


def test_parse_uri_keeps_a_plus_in_query_values():
    # an OCI ref name or a semver ref (1.0.0+build) has "+": not a space, as in HTML forms
    r = parse_uri("oci-layout:///l?ref=1.0.0+build&tag=a%2Bb&x=c%20d")
    assert r.query == {"ref": ("1.0.0+build",), "tag": ("a+b",), "x": ("c d",)}


def test_split_filter_commas_inside_values_and_repeated_keys():
    name, opts = split_filter("Exclude:pattern=*.{pyc,pyo},pattern=/tmp/*,regex=false")
    assert name == "exclude"
    assert opts == {"pattern": ("*.{pyc,pyo}", "/tmp/*"), "regex": ("false",)}


def test_split_filter_escaped_comma_and_underscore_names():
    name, opts = split_filter("normalize_timestamps:ts=0,note=a\\,b=c")
    assert name == "normalize-timestamps"
    assert opts == {"ts": ("0",), "note": ("a,b=c",)}


@pytest.mark.parametrize("bad", ["exclude:pattern", ":x=1", "search:=x"])
def test_split_filter_errors(bad):
    with pytest.raises(URIError):
        split_filter(bad)


SPECS = (OptionSpec("pattern", multiple=True), OptionSpec("ts", int, default=0),
         OptionSpec("regex", bool, default=False), OptionSpec("name"))


def test_convert_options_types_without_coercion():
    got = convert_options(SPECS, {"pattern": ("1",), "ts": ("17",), "regex": ("YES",),
                                  "name": ("true",)}, "filter 'x'")
    assert got == {"pattern": ("1",), "ts": 17, "regex": True, "name": "true"}


def test_convert_options_defaults():
    assert convert_options(SPECS, {}, "x") == {"pattern": (), "ts": 0, "regex": False, "name": None}


@pytest.mark.parametrize("given,message", [
    ({"bogus": ("1",)}, "unknown option 'bogus'"),
    ({"ts": ("soon",)}, "expects int"),
    ({"regex": ("maybe",)}, "expects true or false"),
    ({"ts": ("1", "2")}, "given more than once"),
])
def test_convert_options_errors(given, message):
    with pytest.raises(URIError, match=message):
        convert_options(SPECS, given, "x")


def test_required_option():
    with pytest.raises(URIError, match="'pattern' is required"):
        convert_options([OptionSpec("pattern", required=True)], {}, "filter 'search'")


@pytest.mark.parametrize("glob, empty", [
    ("v[z-a]*", "z-a"), ("[9-0]", "9-0"), ("[!z-a]", "z-a"), ("[a--]", "a--"),
    ("[]a-z][b-a]", "b-a"), ("[]z-a]", "z-a"),
])
def test_check_glob_refuses_an_empty_range(glob, empty):
    with pytest.raises(UsageError, match=re.escape(f"--filter {glob!r}: the range {empty} "
                                                   f"is empty")):
        check_glob(glob, "--filter")


@pytest.mark.parametrize("glob", [
    "v1.*", "[a-z]*", "[0-9]", "[]-a]", "[a-]", "[-a]", "[--a]", "v[z-a", "x]", "a[-]-z]",
    "[a-a]",
])
def test_check_glob_keeps_what_fnmatch_matches_with(glob):
    assert check_glob(glob) == glob
