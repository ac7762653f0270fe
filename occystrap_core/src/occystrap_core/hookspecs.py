"""Every occystrap hook, in one place. These docstrings are the hook reference.

A plugin is a module (or object) with functions decorated by
``@occystrap_core.hookimpl``, registered under the entry-point group ``occystrap``::

    [project.entry-points.occystrap]
    occystrap-acme = "occystrap_acme.plugin"

Hook implementations may accept any subset of a hook's arguments. Contribution
hooks (``occystrap_input_sources`` and friends) return iterables of small
dataclasses from :mod:`occystrap_core.types`; the core collects them from every
plugin, validates them and records which distribution contributed each.

Contribution hooks are called through pluggy once per contributing plugin, after
every plugin is registered and in pluggy's call order (``tryfirst`` first, then
last-registered first). So tracing (``OCCYSTRAP_TRACE_PLUGINS=1``) shows each call,
and a wrapper (``@hookimpl(wrapper=True)``) runs around each plugin's call: it gets
that plugin's results, a list holding one iterable, and may return them changed::

    @hookimpl(wrapper=True)
    def occystrap_input_sources():
        results = yield
        return [[s for result in results for s in result if s.name != "unwanted"]]

A hook that raises, or returns anything but the expected dataclass, fails that
plugin alone (it is unregistered, with one warning); what it contributed through
other hooks goes with it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

import pluggy

if TYPE_CHECKING:
    import httpx

    from .context import Context
    from .types import (
        ClientFactory,
        CommandSpec,
        Credentials,
        FilterSpec,
        GlobalOption,
        InputSource,
        Lister,
        OutputTarget,
        ResolvedURI,
        Role,
        TransportLayer,
    )

hookspec = pluggy.HookspecMarker("occystrap")


@hookspec
def occystrap_input_sources() -> Iterable[InputSource]:
    """Contribute image sources.

    Called once per run when the scheme table is built. Every result from every
    plugin is collected; a scheme claimed by two plugins is an error naming both
    distributions.

    Returns:
        An iterable of :class:`~occystrap_core.types.InputSource`.

    Example::

        @hookimpl
        def occystrap_input_sources():
            def factory(uri, ctx):
                from .source import AcmeInput  # heavy import deferred
                return AcmeInput(uri, ctx)
            yield InputSource(name="acme", schemes=("acme",),
                              summary="Images from the Acme store", factory=factory)
    """


@hookspec
def occystrap_output_targets() -> Iterable[OutputTarget]:
    """Contribute image destinations.

    Called like :func:`occystrap_input_sources`; input and output schemes are
    separate tables, so one plugin may claim ``tar`` for both. An output that keeps
    every image written to one destination sets ``holds_many`` (True, or a callable
    deciding from the resolved URI); without it, a many-image run that would write two
    images to one destination is refused before anything is copied.

    Returns:
        An iterable of :class:`~occystrap_core.types.OutputTarget`.

    Example::

        @hookimpl
        def occystrap_output_targets():
            yield OutputTarget(name="acme", schemes=("acme",), summary="...",
                               factory=lambda uri, ctx: AcmeOutput(uri, ctx))
    """


@hookspec
def occystrap_listers() -> Iterable[Lister]:
    """Contribute listers: the repositories and tags behind a source URI.

    A lister lets ``occystrap sync`` (and many-image sources such as
    ``registry://HOST/REPO_GLOB:TAG_GLOB``) enumerate a registry: its catalog and each
    repository's tags, through whatever API the registry speaks. Glob, rule and
    template handling stay in the core (:mod:`occystrap_core.listing`), so every lister
    gets them. A lister that can also say what a tag points at (``digest``, one HEAD)
    gives ``sync`` its two-request warm check, and one that can ``delete`` a tag serves
    ``sync --prune``. A scheme claimed by two listers is an error naming both
    distributions.

    Returns:
        An iterable of :class:`~occystrap_core.types.Lister`.

    Example::

        @hookimpl
        def occystrap_listers():
            yield Lister(name="acme", schemes=("acme",), summary="Acme catalog API",
                         factory=lazy("occystrap_acme.listing:AcmeLister"))

        # occystrap_acme/listing.py
        class AcmeLister(ImageLister):
            def __init__(self, uri, ctx): ...
            def repositories(self): yield from ...
            def tags(self, repository): yield from ...
            def item(self, repository, tag):
                return BulkItem(uri=f"registry://acme.example/{repository}:{tag}",
                                fields={"repo": repository, "tag": tag})
    """


@hookspec
def occystrap_filters() -> Iterable[FilterSpec]:
    """Contribute filters, used as ``-f NAME[:key=value,...]`` on ``process``.

    Returns:
        An iterable of :class:`~occystrap_core.types.FilterSpec`. A filter name
        contributed twice is an error naming both distributions.

    Example::

        @hookimpl
        def occystrap_filters():
            yield FilterSpec(name="strip-docs", summary="Drop /usr/share/doc",
                             factory=lambda inner, opts, ctx: StripDocs(inner))
    """


@hookspec
def occystrap_global_options() -> Iterable[GlobalOption]:
    """Contribute global command-line options, each with an environment variable.

    Called once per run, when the plugins are loaded: the ``occystrap`` command line
    is parsed with these options (``occystrap --help`` lists them). Each
    ``GlobalOption(name="x")`` becomes ``--x``; its value (from the option, else its
    environment variable, else its default) is in ``ctx.settings.plugin_options["x"]``
    for the whole run. A ``secret`` value is registered with the redaction before any
    command runs, so no output, log line or error shows it. A name claimed by two
    plugins, or by one plugin and the core, is an error naming both distributions.

    Returns:
        An iterable of :class:`~occystrap_core.types.GlobalOption`.

    Example::

        @hookimpl
        def occystrap_global_options():
            yield GlobalOption(name="acme-token", envvar="ACME_TOKEN", secret=True,
                               help="Acme API token (acme:// sources).")

        # in the source, later:
        token = ctx.settings.plugin_options["acme-token"]
    """


@hookspec
def occystrap_commands() -> Iterable[CommandSpec]:
    """Contribute commands: ``occystrap NAME ...`` next to ``process`` and ``info``.

    The command runs after the group's global options were read: its click context's
    ``obj`` is the run's :class:`~occystrap_core.context.Context`, so it gets the
    same credentials, TLS, retry and rate-limit settings as every other command. A
    name claimed by two plugins, or by a plugin and the core, is an error naming both
    distributions.

    Returns:
        An iterable of :class:`~occystrap_core.types.CommandSpec`.

    Example::

        @hookimpl
        def occystrap_commands():
            yield CommandSpec(name="mirror-report", summary="Compare two registries",
                              factory=lazy("occystrap_acme.report:command"))

        # occystrap_acme/report.py
        @click.command("mirror-report")
        @click.argument("source")
        @click.pass_obj
        def command(ctx, source): ...
    """


@hookspec(firstresult=True)
def occystrap_resolve_uri(uri: str, role: Role, ctx: Context) -> ResolvedURI | None:
    """Claim or rewrite a source or destination URI.

    Called for each SOURCE and DEST before the scheme table is consulted.
    Stops at the first non-None result; the core's generic parser
    (``scheme://target?key=value``) is registered ``trylast`` as the fallback.

    Args:
        uri: The string the user gave.
        role: ``"input"`` or ``"output"``.
        ctx: The run's context.

    Returns:
        A :class:`~occystrap_core.types.ResolvedURI`, or None to pass.

    Example::

        @hookimpl
        def occystrap_resolve_uri(uri, role):
            if uri.startswith("acme://"):
                return ResolvedURI(scheme="registry", raw=uri,
                                   target="registry.acme.example/" + uri[7:])
    """


@hookspec(firstresult=True)
def occystrap_credentials(host: str, role: Role, ctx: Context,
                          repository: str | None) -> Credentials | None:
    """Find credentials for a registry or API host.

    Called when a plugin asks ``ctx.credentials(host, role, repository)`` and the URI itself
    carried none. Stops at the first non-None result. The core's own sources
    (command line, environment, Docker ``config.json`` and credential helpers,
    containers ``auth.json``) are registered ``trylast``.

    Args:
        host: ``hostname[:port]`` as written in the reference.
        role: ``"input"`` for a source, ``"output"`` for a destination.
        ctx: The run's context.
        repository: The repository on ``host`` (``ns/app``) the credentials are for,
            when there is one: auth files may hold credentials per namespace.

    Returns:
        :class:`~occystrap_core.types.Credentials`, or None to pass.

    Example::

        @hookimpl
        def occystrap_credentials(host):
            if host.endswith(".acme.example"):
                return Credentials(username="robot", password=vault.read("acme"))
    """


@hookspec
def occystrap_transport() -> Iterable[ClientFactory]:
    """Register HTTP client factories: the shared transport hook.

    Plugins never build an ``httpx.Client``. They register a
    :class:`~occystrap_core.types.ClientFactory` here and later call
    ``ctx.http_client(factory_name, host=...)``; the core calls the factory's
    ``configure`` for the plugin-specific part (base URL, auth, headers) and
    builds the client itself, with HTTP/2, pooling, TLS settings, proxies and the
    global ``--retries`` and ``--rate-limit`` layers. One client is built per
    (factory, host, credentials) per run, shared by every thread, and closed
    when the run ends. A factory name registered twice is an error.

    Returns:
        An iterable of :class:`~occystrap_core.types.ClientFactory`.

    Example::

        @hookimpl
        def occystrap_transport():
            yield ClientFactory(
                name="acme-api", summary="Acme REST API",
                configure=lambda req, ctx: ClientConfig(
                    base_url=f"https://{req.host}/api/",
                    headers={"Authorization": f"Bearer {req.credentials.token}"}))
    """


@hookspec
def occystrap_transport_layers() -> Iterable[TransportLayer]:
    """Add wrappers around every client's network transport.

    Called once per run when the first client is built. Layers are stacked
    innermost first by ``order``: the core's rate limiter is 100 and its retry
    layer 200. A layer above 200 (an audit log, say) sees each logical request
    once; below 100 it sees every attempt. Either way the retries and rate limit
    stay in force.

    Returns:
        An iterable of :class:`~occystrap_core.types.TransportLayer`.

    Example::

        @hookimpl
        def occystrap_transport_layers():
            yield TransportLayer(name="audit", order=300,
                                 wrap=lambda inner, host, ctx: AuditTransport(inner))
    """


@hookspec(firstresult=True)
def occystrap_base_transport(host: str, ctx: Context,
                             tls_verify: bool) -> httpx.BaseTransport | None:
    """Provide the innermost network transport for ``host``.

    Stops at the first non-None result; the core's default sends each request over
    HTTP/2 or pooled HTTP/1.1 with the run's TLS, pool and proxy settings.
    This is the seam tests use to put an ``httpx.MockTransport`` under the real
    retry, rate-limit and auth layers.

    Args:
        host: ``hostname[:port]`` the client talks to.
        ctx: The run's context.
        tls_verify: False when this client must accept any TLS certificate
            (``?tls_verify=false``); ``ctx.settings.tls_verify`` is the run's choice.

    Returns:
        An ``httpx.BaseTransport``, or None to pass.
    """
