"""``occystrap login HOST`` and ``occystrap logout HOST`` (or ``HOST/NS``: that
namespace's own login, the host's left alone, as podman's).

login checks the credentials with an authenticated ``GET /v2/`` (Basic, or a Bearer
token that the token server must grant) before anything is stored, then stores them
where Docker, podman, skopeo and occystrap's own runs look (:mod:`.credstore`).
The run's ``--insecure``, ``--ca-cert`` and ``--tls-verify`` apply to the check.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import click

from .clitypes import NamedPath
from .errors import OccystrapError, UnknownSchemeError, UsageError
from .oci.reference import port_problem

if TYPE_CHECKING:
    from .context import Context

_HOST = re.compile(r"(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:]+\])(?::[0-9]+)?")
_SCOPE = re.compile(r"[a-z0-9._-]+(?:/[a-z0-9._-]+)*")
FACTORY = "registry"  # the registry plugin's client factory: its auth flow and headers


def parse_host(text: str) -> tuple[str, bool]:
    """``(host, plain_http)`` from ``HOST``, ``registry://HOST``, ``https://HOST`` or
    ``http://HOST`` (a path after the host is ignored, as ``docker login`` does)."""
    scheme, sep, rest = text.partition("://")
    if not sep:
        scheme, rest = "", text
    if scheme.lower() not in ("", "registry", "https", "http"):
        raise UsageError(f"expected HOST[:PORT] or registry://HOST[:PORT], got {text!r}")
    host = rest.split("/", 1)[0]
    if not _HOST.fullmatch(host):
        raise UsageError(f"expected HOST[:PORT] or registry://HOST[:PORT], got {text!r}")
    problem = port_problem(host)
    if problem:
        raise UsageError(f"{text!r}: {problem}")
    return host.lower(), scheme.lower() == "http"


def parse_scope(text: str) -> str:
    """The namespace or repository a login of ``text`` is for, "" for the whole host:
    ``HOST/NS`` and ``registry://HOST/NS`` name one (podman's ``login HOST/NS``); the path
    of an ``https://`` or ``http://`` URL is Docker's (``https://index.docker.io/v1/``)."""
    scheme, sep, rest = text.partition("://")
    if sep and scheme.lower() != "registry":
        return ""
    scope = (rest if sep else text).partition("/")[2].strip("/").lower()
    if scope and not _SCOPE.fullmatch(scope):
        raise UsageError(f"expected HOST[:PORT][/NAMESPACE], got {text!r} (no tag or digest)")
    return scope


def _named(host: str, scope: str) -> str:
    return f"{host}/{scope}" if scope else host


def _api_host(host: str) -> str:
    from .oci.reference import DOCKER_HUB_API, HUB_ALIASES

    return DOCKER_HUB_API if host in HUB_ALIASES else host


def check(occy: Context, host: str, username: str, password: str, plain_http: bool) -> bool:
    """Log in to ``host`` once; raises if refused. False when the registry asked for
    no credentials at all, so they could not be checked."""
    from .transport.errors import status_error, translate_errors
    from .types import Credentials

    insecure = plain_http or occy.settings.insecure
    api_host = _api_host(host)
    try:
        client = occy.http_client(FACTORY, api_host, scheme="http" if insecure else "https",
                                  credentials=Credentials(username=username, password=password,
                                                          source="login"))
    except UnknownSchemeError:
        raise UsageError("login needs the occystrap-registry plugin, which is not installed "
                         "or is disabled") from None
    seen: list[int] = []  # every answer, those inside the auth flow included
    client.event_hooks["response"].append(lambda response: seen.append(response.status_code))
    with translate_errors(api_host, "logging in"):
        response = client.get("/v2/")
    if response.status_code != 200:
        raise status_error(response, "logging in", expected=(200,))
    return 401 in seen


def _password(password: str | None, password_stdin: bool, settings_password: str | None,
              interactive: bool) -> str:
    if password_stdin:
        if password is not None:
            raise UsageError("login: give --password or --password-stdin, not both")
        password = click.get_text_stream("stdin").read().rstrip("\r\n")
    elif password is not None:
        click.echo("Warning: a password on the command line may be seen by other users of "
                   "this machine; prefer --password-stdin", err=True)
    password = password if password is not None else settings_password
    if password is None:
        if not interactive:
            raise UsageError("login: give the password with --password-stdin (stdin is not a "
                             "terminal)")
        password = click.prompt("Password", hide_input=True, err=True)
    if not password:
        raise UsageError("login: the password is empty")
    return password


@click.command("login")
@click.argument("registry", metavar="HOST")
@click.option("-u", "--username", help="User name (prompted for on a terminal).")
@click.option("-p", "--password", help="Password; prefer --password-stdin.")
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin.")
@click.option("--authfile", type=NamedPath(dir_okay=False),
              help="Store here instead of $REGISTRY_AUTH_FILE or $DOCKER_CONFIG/config.json.")
@click.pass_context
def login_command(ctx: click.Context, registry: str, username: str | None,
                  password: str | None, password_stdin: bool, authfile: str | None) -> None:
    """Check credentials against the registry HOST, then store them for Docker, podman,
    skopeo and occystrap (in a credential helper when one is configured)."""
    from . import credstore
    from .context import Context

    occy = ctx.find_object(Context)
    assert occy is not None, "the group callback makes the Context"
    host, plain_http = parse_host(registry)
    scope = parse_scope(registry)
    settings = occy.settings
    interactive = click.get_text_stream("stdin").isatty()
    username = username or settings.username
    if not username:
        if password_stdin or not interactive:
            raise UsageError("login: give --username (-u)")
        username = click.prompt("Username", err=True)
    # the run's --password only goes with the run's --username
    fallback = settings.password if username == settings.username else None
    secret = _password(password, password_stdin, fallback, interactive and not password_stdin)
    if not check(occy, host, username, secret, plain_http):
        click.echo(f"Warning: {host} asked for no credentials; they are stored unchecked",
                   err=True)
    where = credstore.store(host, username, secret, authfile, scope)
    click.echo(f"Login Succeeded: credentials for {_named(host, scope)} stored in {where}")


@click.command("logout")
@click.argument("registry", metavar="HOST")
@click.option("--authfile", type=NamedPath(dir_okay=False),
              help="Edit this file instead of $REGISTRY_AUTH_FILE or $DOCKER_CONFIG/config.json.")
def logout_command(registry: str, authfile: str | None) -> None:
    """Remove the credentials stored for the registry HOST (and from its credential helper)."""
    from . import credstore

    host, _ = parse_host(registry)
    scope = parse_scope(registry)
    if not credstore.erase(host, authfile, scope):
        raise OccystrapError(f"not logged in to {_named(host, scope)}")
    click.echo(f"Removed login credentials for {_named(host, scope)}")
