"""Small typed values that hooks return and the core passes to plugins.

Kept free of heavy imports: entry-point modules import this at start-up.
:class:`Platform` is :class:`occystrap_core.oci.platform.Platform`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Literal, Mapping

if TYPE_CHECKING:
    import httpx

    from .api import ImageFilter, ImageInput, ImageLister, ImageOutput, ImageSet
    from .context import Context

Role = Literal["input", "output"]

_SCHEME_RE = re.compile(r"^[a-z][a-z0-9+.-]*$")
_NAME_RE = re.compile(r"^[a-z][a-z0-9_-]*$")
_OPTION_RE = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")
_ENVVAR_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class OptionSpec:
    """One option a URI (``?key=value``) or a filter (``name:key=value``) accepts.

    Values are converted by the core from strings with ``type`` (``str``, ``int``,
    ``float`` or ``bool``, where bool accepts true/false/yes/no/1/0). Nothing is
    coerced by guessing: ``pattern=1`` stays the string ``"1"`` for a str option.
    With ``multiple=True`` the key may repeat and the value is a tuple.
    """

    name: str
    type: type = str
    help: str = ""
    default: Any = None
    multiple: bool = False
    required: bool = False


def lazy(target: str) -> Callable[..., Any]:
    """A factory for ``"module:attr"`` that imports the module only when first called.

    Keeps entry-point modules cheap to import::

        InputSource(name="acme", schemes=("acme",), summary="...",
                    factory=lazy("occystrap_acme.source:AcmeInput"))

    calls ``AcmeInput(uri, ctx)`` the first time an ``acme://`` URI is used.
    """
    module, _, attr = target.partition(":")
    if not module or not attr:
        raise ValueError(f"lazy target {target!r} is not 'module:attr'")

    def factory(*args: Any, **kwargs: Any) -> Any:
        import importlib

        return getattr(importlib.import_module(module), attr)(*args, **kwargs)

    factory.__qualname__ = f"lazy({target!r})"
    return factory


def _normalise(kind: str, obj: Any) -> None:
    name = obj.name.lower()
    if not _NAME_RE.match(name):
        raise ValueError(f"invalid {kind} name {obj.name!r}")
    object.__setattr__(obj, "name", name)


def _check_schemes(obj: Any) -> None:
    schemes = tuple(s.lower() for s in obj.schemes)
    if not schemes:
        raise ValueError(f"{obj.name!r} claims no scheme")
    for scheme in schemes:
        if not _SCHEME_RE.match(scheme):
            raise ValueError(f"{obj.name!r} claims invalid scheme {scheme!r}")
    object.__setattr__(obj, "schemes", schemes)
    if not callable(obj.factory):
        raise ValueError(f"{obj.name!r} has a factory that is not callable")


@dataclass(frozen=True)
class InputSource:
    """An image source contributed by ``occystrap_input_sources``.

    ``factory(uri, ctx)`` builds an :class:`~occystrap_core.api.ImageInput` (or, for a
    source naming many images, an :class:`~occystrap_core.api.ImageSet`); import
    heavy modules inside it, not at the top of the plugin module.
    """

    name: str
    schemes: tuple[str, ...]
    summary: str
    factory: Callable[[ResolvedURI, Context], ImageInput | ImageSet]
    options: tuple[OptionSpec, ...] = ()
    paths: bool = False  # the target is a local path: shell completion offers files

    def __post_init__(self) -> None:
        _normalise("input source", self)
        _check_schemes(self)


@dataclass(frozen=True)
class OutputTarget:
    """An image destination contributed by ``occystrap_output_targets``.

    ``holds_many`` says whether images written one after another to one destination
    (the same scheme and target, as when a many-image run's template has no
    placeholder) all stay there: True, or a callable deciding from the resolved URI
    and its converted options. By default a second image would replace the first, so
    such a run is refused before anything is copied.
    """

    name: str
    schemes: tuple[str, ...]
    summary: str
    factory: Callable[[ResolvedURI, Context], ImageOutput]
    options: tuple[OptionSpec, ...] = ()
    holds_many: bool | Callable[[ResolvedURI], bool] = False
    paths: bool = False  # the target is a local path: shell completion offers files

    def __post_init__(self) -> None:
        _normalise("output target", self)
        _check_schemes(self)
        if not isinstance(self.holds_many, bool) and not callable(self.holds_many):
            raise ValueError(f"{self.name!r}: holds_many is neither a bool nor callable")

    def can_hold_many(self, uri: ResolvedURI) -> bool:
        """Whether several images written to ``uri`` all stay (see ``holds_many``)."""
        return self.holds_many(uri) if callable(self.holds_many) else self.holds_many


@dataclass(frozen=True)
class Lister:
    """A repository and tag lister contributed by ``occystrap_listers``.

    ``factory(uri, ctx)`` builds an :class:`~occystrap_core.api.ImageLister` for a
    resolved source URI of one of ``schemes`` (its options converted against the input
    source's options for that scheme). Import heavy modules inside it.
    """

    name: str
    schemes: tuple[str, ...]
    summary: str
    factory: Callable[[ResolvedURI, Context], ImageLister]

    def __post_init__(self) -> None:
        _normalise("lister", self)
        _check_schemes(self)


@dataclass(frozen=True)
class FilterSpec:
    """A filter contributed by ``occystrap_filters``, used as ``-f name:key=value``.

    ``factory(inner, options, ctx)`` returns an :class:`~occystrap_core.api.ImageFilter`
    wrapping the output ``inner``; ``options`` maps option names to converted values.
    """

    name: str
    summary: str
    factory: Callable[[ImageOutput, Mapping[str, Any], Context], ImageFilter]
    options: tuple[OptionSpec, ...] = ()

    def __post_init__(self) -> None:
        _normalise("filter", self)
        if not callable(self.factory):
            raise ValueError(f"filter {self.name!r} has a factory that is not callable")


@dataclass(frozen=True)
class GlobalOption:
    """A global command-line option contributed by ``occystrap_global_options``.

    ``--NAME`` is added to the ``occystrap`` command, before any subcommand; when it is
    not given, ``envvar`` is read, else ``default`` is used. The value, converted with
    ``type`` (``str``, ``int`` or ``float``; ``bool`` makes a flag, False unless given), is in
    ``ctx.settings.plugin_options[NAME]``. A ``secret`` value is registered with the
    redaction (:mod:`occystrap_core.redact`), so it is never printed or logged.
    """

    name: str
    help: str
    envvar: str | None = None
    type: type = str
    default: Any = None
    secret: bool = False
    metavar: str | None = None

    def __post_init__(self) -> None:
        if not _OPTION_RE.match(self.name):
            raise ValueError(f"invalid global option name {self.name!r} (want e.g. 'acme-token')")
        if self.envvar is not None and not _ENVVAR_RE.match(self.envvar):
            raise ValueError(f"global option {self.name!r}: invalid envvar {self.envvar!r}")
        if self.type not in (str, int, float, bool):
            raise ValueError(f"global option {self.name!r}: type must be str, int, float or bool")


@dataclass(frozen=True)
class CommandSpec:
    """A command contributed by ``occystrap_commands``: ``occystrap NAME ...``.

    ``factory()`` returns the :class:`click.Command`; it is called only when the
    command runs or ``--help`` lists it, so build it with :func:`lazy` and keep heavy
    imports inside the command's function. The run's
    :class:`~occystrap_core.context.Context` is the click context's ``obj``.
    """

    name: str
    summary: str
    factory: Callable[[], Any]

    def __post_init__(self) -> None:
        _normalise("command", self)
        if not callable(self.factory):
            raise ValueError(f"command {self.name!r} has a factory that is not callable")


@dataclass(frozen=True)
class ResolvedURI:
    """A source or destination after scheme resolution.

    ``target`` is everything between ``scheme://`` and ``?``, percent-decoded; each
    plugin interprets it (a path, an image reference, ...). ``query`` keeps every value
    of a repeated key, as strings: options are converted against the plugin's
    :class:`OptionSpec` list by the core, not here. ``credentials`` carries
    credentials a resolver attached (e.g. from ``user:pass@`` or a Quay token).
    """

    scheme: str
    target: str
    raw: str
    query: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    credentials: Credentials | None = None
    options: Mapping[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:  # never show credentials
        return f"ResolvedURI(scheme={self.scheme!r}, target={self.target!r})"


@dataclass(frozen=True)
class Credentials:
    """A username/password or token pair for a host. ``repr`` never shows secrets.

    ``token`` is an identity (OAuth2 refresh) token, traded for registry tokens;
    ``registry_token`` a bearer token sent to the registry as it is (Docker's
    ``registrytoken``), no token server asked.
    """

    username: str | None = None
    password: str | None = None
    token: str | None = None
    source: str = ""
    registry_token: str | None = None

    def __post_init__(self) -> None:
        from .redact import remember

        remember(self.password, self.token, self.registry_token)  # from now on, never printed

    def __repr__(self) -> str:
        return f"Credentials(username={self.username!r}, source={self.source!r})"

    @property
    def identity(self) -> str:
        """A non-secret key telling credential sets apart (for client caching)."""
        import hashlib

        secret = f"{self.username}\0{self.password}\0{self.token}\0{self.registry_token}"\
            .encode()
        return hashlib.sha256(secret).hexdigest()[:16]


@dataclass(frozen=True)
class ClientRequest:
    """What a plugin asks the core for when it calls ``ctx.http_client(...)``.

    Passed to the matching :class:`ClientFactory`'s ``configure`` callable.
    """

    factory: str
    host: str
    scheme: str = "https"
    credentials: Credentials | None = None
    scope: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ClientConfig:
    """What a :class:`ClientFactory` returns: the plugin-specific part of a client.

    The core builds the ``httpx.Client`` from this and adds the global layers
    (retries, rate limit, TLS, HTTP/2, proxies, User-Agent), so a plugin cannot
    bypass them. ``base_url`` defaults to ``scheme://host``.
    """

    base_url: str | None = None
    auth: httpx.Auth | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    timeout: float | None = None
    event_hooks: Mapping[str, list[Callable]] = field(default_factory=dict)


@dataclass(frozen=True)
class ClientFactory:
    """An HTTP client factory registered through the shared ``occystrap_transport`` hook.

    ``configure(request, ctx)`` returns a :class:`ClientConfig` for one
    (host, credentials) pair; it is called once per pair per run.
    """

    name: str
    summary: str
    configure: Callable[[ClientRequest, Context], ClientConfig]

    def __post_init__(self) -> None:
        _normalise("client factory", self)


@dataclass(frozen=True)
class TransportLayer:
    """A wrapper around the network transport, from ``occystrap_transport_layers``.

    ``wrap(inner, host, ctx)`` returns an ``httpx.BaseTransport`` that calls
    ``inner``. Layers are applied innermost first by ascending ``order``; the core's
    rate limiter is order 100 and its retry layer order 200, so a layer of order 300
    sees each logical request once and one of order 50 sees every attempt.
    """

    name: str
    order: int
    wrap: Callable[[httpx.BaseTransport, str, Context], httpx.BaseTransport]

    def __post_init__(self) -> None:
        _normalise("transport layer", self)
