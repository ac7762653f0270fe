"""Entry-point module of occystrap-registry: hook implementations only, no heavy imports.

Everything that talks HTTP lives in modules imported when a source, destination or
client is actually built.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Iterator
from urllib.parse import unquote, urlencode

from occystrap_core import hookimpl
from occystrap_core.digest import is_valid
from occystrap_core.errors import URIError
from occystrap_core.types import (
    ClientFactory,
    Credentials,
    GlobalOption,
    InputSource,
    Lister,
    OptionSpec,
    OutputTarget,
    ResolvedURI,
    lazy,
)
from occystrap_core.uri import has_pattern, parse_uri

SCHEME = "registry"
COMPRESSION_OPTION = "compression"
_PREFIX = f"{SCHEME}://"

_COMMON = (
    OptionSpec("insecure", bool, "Plain HTTP instead of HTTPS for this registry.", False),
    OptionSpec("tls_verify", bool, "false: accept any TLS certificate from this registry "
               "(self-signed ones), as --tls-verify=false does for every registry.", True),
)
INPUT_OPTIONS = _COMMON + (
    OptionSpec("page_size", int, "Entries per page when listing tags or the catalog (n=)."),
)
OUTPUT_OPTIONS = _COMMON + (
    OptionSpec("compression", str, "gzip, zstd or none: re-encode layers with it "
               "(default: keep compressed layers as they are, gzip uncompressed ones)."),
    OptionSpec("level", int, "Compression level (gzip 0-3, default 1; zstd -7..22, default 3)."),
)


_HOST = re.compile(r"(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:]+\])(?::[0-9]+)?")


def split_userinfo(rest: str) -> tuple[str | None, str]:
    """``("user:pass", "host/repo:tag")`` from ``user:pass@host/repo:tag``.

    The userinfo ends at the last ``@`` that a host follows (then ``/``, ``?`` or the
    end), not at the first ``/``: passwords are often pasted without percent-encoding
    their ``/``, ``?``, ``#`` or ``@``. A digest (``repo@sha256:...``) is no host.
    """
    for at in reversed([i for i, c in enumerate(rest) if c == "@"]):
        host = re.split(r"[/?]", rest[at + 1:], maxsplit=1)[0]
        if _HOST.fullmatch(host) and not is_valid(host):
            return rest[:at], rest[at + 1:]
    return None, rest


@hookimpl
def occystrap_resolve_uri(uri: str) -> ResolvedURI | None:
    """Take ``user:pass@`` and ``?username=&password=`` out of a registry URI.

    Both become the URI's credentials; neither stays in the target or the query, so
    they are never shown or mistaken for options.
    """
    if not uri[:len(_PREFIX)].lower() == _PREFIX:
        return None
    from occystrap_core.oci.reference import parse

    userinfo, rest = split_userinfo(uri[len(_PREFIX):])
    username = password = None
    if userinfo is not None:
        user, _, pw = userinfo.partition(":")
        username, password = unquote(user), unquote(pw)
        Credentials(password=password)  # registered for redaction before any error
    target, sep, query = rest.partition("?")
    authority, slash, path = target.partition("/")
    if userinfo is not None and not slash:  # never send them to Docker Hub's library/HOST
        raise URIError(f"registry://{authority} names no repository: expected one "
                       f"after the host, as in registry://HOST[:PORT]/REPO[:TAG]")
    resolved = parse_uri(f"{_PREFIX}{authority}{slash}{path}{sep}{query}")
    query_values = dict(resolved.query)
    for key in ("username", "password"):
        values = query_values.pop(key, ())
        if values:
            if key == "username":
                username = values[-1]
            else:
                password = values[-1]
    credentials = None
    if username is not None or password is not None:
        credentials = Credentials(username=username, password=password, source="URI")
    # a pattern (HOST/REPO_GLOB:TAG_GLOB) is read by the core's listing; a bad
    # reference fails here, clearly
    canonical = resolved.target if has_pattern(resolved.target) else str(parse(resolved.target))
    shown = urlencode([(k, v) for k, vs in query_values.items() for v in vs])
    return replace(resolved, scheme=SCHEME, target=canonical, query=query_values,
                   credentials=credentials,
                   raw=f"{_PREFIX}{canonical}" + (f"?{shown}" if shown else ""))


@hookimpl
def occystrap_global_options() -> Iterator[GlobalOption]:
    # occystrap 0.4.17 had it, and its variable; ?compression= overrides it per push
    yield GlobalOption(name=COMPRESSION_OPTION, envvar="OCCYSTRAP_COMPRESSION", metavar="KIND",
                       help="gzip, zstd or none: re-encode the layers of every registry:// "
                            "push with it (as ?compression=).")


@hookimpl
def occystrap_input_sources() -> Iterator[InputSource]:
    yield InputSource(name="registry", schemes=(SCHEME,),
                      summary="Docker Registry V2 / OCI distribution (pull); "
                              "HOST/REPO_GLOB:TAG_GLOB lists many images",
                      factory=lazy("occystrap_registry.source:open_source"),
                      options=INPUT_OPTIONS)


@hookimpl
def occystrap_listers() -> Iterator[Lister]:
    yield Lister(name="registry", schemes=(SCHEME,),
                 summary="/v2/_catalog and /v2/<name>/tags/list, with n= and Link pages",
                 factory=lazy("occystrap_registry.listing:RegistryLister"))


@hookimpl
def occystrap_output_targets() -> Iterator[OutputTarget]:
    yield OutputTarget(name="registry", schemes=(SCHEME,),
                       summary="Docker Registry V2 / OCI distribution (push)",
                       factory=lazy("occystrap_registry.target:RegistryOutput"),
                       options=OUTPUT_OPTIONS,
                       holds_many=False)  # the target names one tag: a second image moves it


@hookimpl
def occystrap_transport() -> Iterator[ClientFactory]:
    yield ClientFactory(name="registry", summary="Registry API (Bearer and Basic auth)",
                        configure=lazy("occystrap_registry.client:configure"))
