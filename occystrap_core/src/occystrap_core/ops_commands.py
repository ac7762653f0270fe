"""The registry operation commands: ``tags``, ``catalog``, ``manifest``, ``config``,
``digest``, ``tag``, ``delete`` and ``export`` (the work is in :mod:`.ops`).

Kept light to import: the CLI registers these commands at start-up. Each takes the
run's global options (credentials, TLS, retries) and ``-O json``; REF is a source URI
such as ``registry://HOST/REPO:TAG`` or ``oci-layout://DIR?ref=NAME``.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import click

from . import outputformat
from .errors import NOT_JSON

if TYPE_CHECKING:
    from .context import Context

FORMAT = outputformat.option()
PLATFORM = click.option("--platform", "platform", metavar="OS/ARCH[/VARIANT]",
                        help="From a multi-platform index, the image for this platform.")


def _occy(ctx: click.Context) -> Context:
    from .context import Context

    occy = ctx.find_object(Context)
    assert occy is not None, "the group callback makes the Context"
    return occy


def _json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2))


def _raw(data: bytes) -> None:
    click.get_binary_stream("stdout").write(data)


def _document(data: bytes) -> Any:
    """A manifest or config for ``-O json``: its JSON, or (not JSON) its text."""
    try:
        return json.loads(data)
    except NOT_JSON:
        return data.decode(errors="replace")


@click.command()
@click.argument("ref")
@click.option("--filter", "pattern", metavar="GLOB", help="Only tags matching this glob.")
@FORMAT
@click.pass_context
def tags(ctx: click.Context, ref: str, pattern: str | None, fmt: str) -> None:
    """List the tags of REF's repository (or OCI layout)."""
    from . import ops, redact

    found = ops.tags(ref, pattern=pattern, session=_occy(ctx))
    if fmt == "json":
        _json({"repository": redact.redact_uri(ref), "tags": found})
    for t in found if fmt == "text" else ():
        click.echo(t)


@click.command()
@click.argument("host")
@FORMAT
@click.pass_context
def catalog(ctx: click.Context, host: str, fmt: str) -> None:
    """List a registry's repositories, every page.

    HOST is HOST[:PORT] or registry://HOST[:PORT][?page_size=N].
    """
    from . import ops, redact

    found = ops.catalog(host, session=_occy(ctx))
    if fmt == "json":
        _json({"registry": redact.redact_uri(host), "repositories": found})
    for name in found if fmt == "text" else ():
        click.echo(name)


@click.command()
@click.argument("ref")
@PLATFORM
@FORMAT
@click.pass_context
def manifest(ctx: click.Context, ref: str, platform: str | None, fmt: str) -> None:
    """Print the manifest or index, bytes as stored.

    With --platform, the manifest an index lists for that platform.
    """
    from . import digest as digests
    from . import ops

    fetched = ops.manifest(ref, platform=platform, session=_occy(ctx))
    if fmt == "text":
        _raw(fetched.data)
        return
    _json({"digest": digests.of_bytes(fetched.data), "mediaType": fetched.media_type,
           "size": len(fetched.data), "manifest": _document(fetched.data)})


@click.command()
@click.argument("ref")
@PLATFORM
@FORMAT
@click.pass_context
def config(ctx: click.Context, ref: str, platform: str | None, fmt: str) -> None:
    """Print the image config, bytes as stored.

    From an index, the image --platform (or this host) picks.
    """
    from . import digest as digests
    from . import ops

    data = ops.config(ref, platform=platform, session=_occy(ctx))
    if fmt == "text":
        _raw(data)
        return
    _json({"digest": digests.of_bytes(data), "size": len(data), "config": _document(data)})


@click.command()
@click.argument("ref")
@PLATFORM
@FORMAT
@click.pass_context
def digest(ctx: click.Context, ref: str, platform: str | None, fmt: str) -> None:
    """Print the digest of what REF names.

    For an index, the index's, unless --platform picks one of its manifests.
    """
    from . import ops

    found = ops.digest(ref, platform=platform, session=_occy(ctx))
    if fmt == "json":
        _json({"digest": found})
    else:
        click.echo(found)


@click.command()
@click.argument("ref")
@click.argument("new_tags", nargs=-1, required=True, metavar="NEWTAG...")
@FORMAT
@click.pass_context
def tag(ctx: click.Context, ref: str, new_tags: tuple[str, ...], fmt: str) -> None:
    """Add tags to what REF names, in its repository.

    One manifest write per tag; no blob is copied or asked about.
    """
    from . import ops, redact

    done = ops.tag(ref, new_tags, session=_occy(ctx))
    if fmt == "json":
        _json([{**d, "location": redact.redact_uri(d["location"])} for d in done])
        return
    for d in done:
        click.echo(f"Tagged {redact.redact_uri(d['location'])} ({d['digest']})")


@click.command()
@click.argument("ref")
@click.option("--manifest", "whole", is_flag=True,
              help="Delete the manifest REF names, and so every tag naming it (they are "
                   "listed).")
@FORMAT
@click.pass_context
def delete(ctx: click.Context, ref: str, whole: bool, fmt: str) -> None:
    """Delete a tag, leaving its manifest and other tags.

    A registry that deletes manifests only (CNCF distribution before 3) refuses; then
    --manifest deletes the manifest, with every tag naming it. In an OCI layout the
    index.json entries go; the blobs stay.
    """
    from . import ops, redact

    done = ops.delete(ref, manifest=whole, session=_occy(ctx))
    shown = redact.redact_uri(ref)
    if fmt == "json":
        _json({"ref": shown, **done})
    elif whole:
        click.echo(f"Deleted manifest {done['digest']}; tags gone: "
                   f"{', '.join(done['tags']) or '(none)'}")
    else:
        click.echo(f"Deleted tag {shown}")


@click.command()
@click.argument("ref")
@click.argument("destination", metavar="FILE|-")
@PLATFORM
@FORMAT
@click.pass_context
def export(ctx: click.Context, ref: str, destination: str, platform: str | None,
           fmt: str) -> None:
    """Write the image's flattened root filesystem as one tar.

    Whiteouts are applied and layers streamed. FILE is written whole or not at all;
    - writes to stdout. The summary goes to stderr (to stdout with -O json and a FILE).
    """
    from . import ops
    from .cli import WRITING
    from .tempfiles import is_stdout

    target: Any = click.get_binary_stream("stdout") if destination == "-" else destination
    ctx.meta[WRITING] = destination if destination != "-" else None  # a full disk names it
    done = ops.export(ref, target, platform=platform, session=_occy(ctx))
    if target is not destination:
        target.flush()
    if fmt == "json":
        click.echo(json.dumps(done, indent=2),
                   err=destination == "-" or is_stdout(destination))
    else:
        click.echo(f"Exported {done['members']} entries from {done['layers']} layers",
                   err=True)
