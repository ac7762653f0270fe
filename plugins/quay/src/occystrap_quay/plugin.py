"""Entry-point module of occystrap-quay: hook implementations only, no heavy imports.

``quay://NAMESPACE[/REPO_GLOB[:TAG_GLOB]]`` lists a Quay namespace through the Quay
REST API and expands to one ``registry://`` source per matching tag (an
:class:`~occystrap_core.api.ImageSet`); the API client is registered through the
shared transport hook.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Iterator
from urllib.parse import urlencode

from occystrap_core import hookimpl
from occystrap_core.types import (
    ClientFactory,
    Credentials,
    GlobalOption,
    InputSource,
    Lister,
    OptionSpec,
    ResolvedURI,
    lazy,
)
from occystrap_core.uri import parse_uri

SCHEME = "quay"
_PREFIX = f"{SCHEME}://"
TOKEN_OPTION = "quay-token"  # --quay-token / QUAY_TOKEN, for every quay:// URI of the run

OPTIONS = (
    OptionSpec("host", str, "Quay server (API and registry), default quay.io.", "quay.io"),
    OptionSpec("registry", str, "Registry HOST[:PORT] to pull from, when not the Quay host."),
    OptionSpec("since", str, "Only repositories and tags changed on or after this date "
               "(YYYY-MM-DD or ISO 8601, UTC)."),
    OptionSpec("insecure", bool, "Plain HTTP for the Quay API and the registry.", False),
)


@hookimpl
def occystrap_resolve_uri(uri: str) -> ResolvedURI | None:
    """Move ``?token=`` into the URI's credentials, so it is never shown or logged."""
    if uri[:len(_PREFIX)].lower() != _PREFIX:
        return None
    resolved = parse_uri(uri)
    query = dict(resolved.query)
    tokens = query.pop("token", ())
    credentials = Credentials(token=tokens[-1], source="URI") if tokens else None
    shown = urlencode([(k, v) for k, vs in query.items() for v in vs])
    return replace(resolved, query=query, credentials=credentials,
                   raw=f"{_PREFIX}{resolved.target}" + (f"?{shown}" if shown else ""))


@hookimpl
def occystrap_global_options() -> Iterator[GlobalOption]:
    yield GlobalOption(name=TOKEN_OPTION, envvar="QUAY_TOKEN", secret=True,
                       help="Quay API token (quay:// sources).")


@hookimpl
def occystrap_input_sources() -> Iterator[InputSource]:
    yield InputSource(name="quay", schemes=(SCHEME,),
                      summary="every matching tag of a Quay namespace, as many images "
                              "(quay://NAMESPACE[/REPO_GLOB[:TAG_GLOB]])",
                      factory=lazy("occystrap_quay.source:QuayImages"), options=OPTIONS)


@hookimpl
def occystrap_transport() -> Iterator[ClientFactory]:
    yield ClientFactory(name="quay-api", summary="Quay REST API (Bearer token)",
                        configure=lazy("occystrap_quay.client:configure"))


@hookimpl
def occystrap_listers() -> Iterator[Lister]:
    yield Lister(name="quay", schemes=(SCHEME,),
                 summary="repositories and tags of a Quay namespace (Quay REST API)",
                 factory=lazy("occystrap_quay.source:QuayLister"))
