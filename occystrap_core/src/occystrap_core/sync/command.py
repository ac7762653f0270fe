"""``occystrap sync``: the command line (the work is in :mod:`.plan` and :mod:`.run`).

Kept light to import: the CLI registers this command at start-up.
"""

from __future__ import annotations

import dataclasses
import os
from typing import TYPE_CHECKING, Any

import click

from .. import hookimpl, outputformat
from ..clitypes import NamedPath

if TYPE_CHECKING:
    from ..context import Context
    from ..types import Credentials
    from .config import RegistrySettings, SyncConfig

EXIT_OK, EXIT_FAILED, EXIT_CANNOT_RUN = 0, 1, 2


class ConfigCredentials:
    """The configuration's per-registry credentials, asked before any other source;
    for a repository, its most specific key (``HOST/NS`` before ``HOST``) that has some."""

    def __init__(self, registries: dict[str, RegistrySettings]):
        self.registries = {host.lower(): r for host, r in registries.items()
                           if r.username or r.password or r.token}

    @hookimpl(tryfirst=True)
    def occystrap_credentials(self, host: str, repository: str | None) -> Credentials | None:
        from ..builtin.credentials import applying_keys
        from ..types import Credentials

        keys = applying_keys(self.registries, host, repository)
        if not keys:
            return None
        r = self.registries[keys[0]]
        return Credentials(username=r.username, password=r.password, token=r.token,
                           source="sync configuration")


def parse_shard(value: str | None) -> tuple[int, int] | None:
    """``I/N``, or ``N`` with I from ``JOB_COMPLETION_INDEX`` (Kubernetes Indexed Jobs)."""
    from ..errors import UsageError

    if value is None:
        return None
    index_text, slash, count_text = value.rpartition("/")
    given = f"--shard {value}"
    if not slash:
        index_text = os.environ.get("JOB_COMPLETION_INDEX", "")
        given += f" with JOB_COMPLETION_INDEX={index_text!r}"
        if not index_text:
            raise UsageError(f"--shard {value}: give I/N, or N with JOB_COMPLETION_INDEX set")
    try:
        index, count = int(index_text), int(count_text)
    except ValueError:
        raise UsageError(f"{given}: expected I/N (e.g. 0/4), or N and a number in "
                         f"JOB_COMPLETION_INDEX") from None
    if count < 1 or not 0 <= index < count:
        raise UsageError(f"{given}: needs 0 <= I < N")
    return index, count


def _config(args: tuple[str, ...]) -> SyncConfig:
    from ..errors import UsageError
    from . import config

    if len(args) == 1:
        return config.load(args[0])
    if len(args) == 2:
        return config.SyncConfig((config.SourceSpec(line=0, pattern=args[0],
                                                    destinations=(args[1],)),))
    raise UsageError("sync takes CONFIG.yaml, or SOURCE_PATTERN DESTINATION_TEMPLATE")


def _prepare(ctx: Context, cfg: SyncConfig) -> None:
    """Per-registry credentials, CAs, request budgets and concurrency caps, for this
    run (before any client is built)."""
    from ..transport.ratelimit import Budget, set_budget
    from .plan import LOOKUPS_PER_COPY

    # An image being checked holds a connection to its source and one to a destination:
    # with fewer in the pool, HTTP/1.1 ones would be closed and reopened between the hosts.
    ctx.settings.max_connections = max(ctx.settings.max_connections,
                                       2 * LOOKUPS_PER_COPY * ctx.settings.image_parallel)
    ctx.settings.host_ca_certs = {**ctx.settings.host_ca_certs, **{
        host.lower(): r.ca_cert for host, r in cfg.registries.items() if r.ca_cert}}
    if any(r.username or r.password or r.token for r in cfg.registries.values()):
        ctx.plugins.pm.register(ConfigCredentials(cfg.registries), name="occystrap-core.sync")
    for host, r in cfg.registries.items():
        if r.requests_per_second or r.concurrency:
            set_budget(ctx, host, Budget(r.requests_per_second, r.concurrency))


def execute(ctx: Context, args: tuple[str, ...], *, dry_run: bool, prune: bool,
            events_to: str | None, shard: str | None, fmt: str,
            referrers: bool = False) -> int:
    """The whole sync; returns the exit code. Errors that stop it before any image
    (a bad configuration, a bad template) are raised."""
    import json
    import sys
    import time

    from .events import EventProgress, Events, EventStats
    from .plan import Planner
    from .run import Runner, report

    started = time.monotonic()
    cfg = _config(args)
    if referrers:
        cfg = dataclasses.replace(cfg, sources=tuple(
            dataclasses.replace(s, referrers=True) for s in cfg.sources))
    where = parse_shard(shard)
    _prepare(ctx, cfg)
    stream: Any = None
    if events_to == "-":
        stream = sys.stderr
    elif events_to:
        try:
            stream = open(events_to, "a", encoding="utf-8")  # noqa: SIM115 - closed below
        except OSError as e:
            from ..errors import UsageError

            raise UsageError(f"--events {events_to}: {e.strerror}") from None
    try:
        events = Events(stream)
        ctx.stats = EventStats(events)
        ctx.progress = EventProgress(ctx.progress, events)
        planner = Planner(ctx, cfg, shard=where, prune=prune)
        plan = planner.plan()
        runner = Runner(ctx, planner, events, dry_run=dry_run)
        results = runner.run(plan)
        deletions = runner.prune(plan) if prune else []
        account = report(results, deletions, ctx, started, where)
        events.emit("report", **{k: v for k, v in account.items()
                                 if k not in ("images", "deletions")})
    finally:
        if stream not in (None, sys.stderr):
            stream.close()
    if fmt == "json":
        click.echo(json.dumps(account, indent=2))
    else:
        for r in results + deletions:
            if r.line:
                click.echo(r.line)
        counts = account["counts"]
        parts = [f"{n} {state}" for state, n in sorted(counts.items())] or ["nothing to do"]
        click.echo(("Dry run: " if dry_run else "Sync: ") + ", ".join(parts)
                   + f", {account['elapsed']:.1f} s", err=True)
        for r in results + deletions:
            if r.state == "failed" or r.reason:
                shown = r.as_dict()
                both = [shown[k] for k in ("source", "destination") if shown[k]]
                label, why = ("FAILED", "error") if r.state == "failed" else ("skipped", "reason")
                click.echo(f"  {label} {' -> '.join(both)}: {shown.get(why)}", err=True)
    return EXIT_OK if account["ok"] else EXIT_FAILED


@click.command("sync")
@click.argument("args", nargs=-1, required=True, metavar="CONFIG.yaml | SOURCE DESTINATION")
@click.option("--dry-run", is_flag=True, help="Print each copy and delete; do neither.")
@click.option("--prune", is_flag=True,
              help="Delete destination tags in scope that the source no longer has.")
@click.option("--events", "events_to", metavar="FILE",
              type=NamedPath(dir_okay=False, allow_dash=True),
              help="Write JSON-lines events to FILE ('-': stderr).")
@click.option("--shard", metavar="I/N",
              help="Do shard I of N (by destination repository); N alone takes I from "
                   "JOB_COMPLETION_INDEX.")
@click.option("-J", "--jobs", type=click.IntRange(1, 256), default=None,
              help="Images copied at once, and 4x as many checked (HEADs) "
                   "[default: 8, or the global -J].")
@outputformat.option(help="json: the final report on stdout.")
@click.option("--referrers", "with_referrers", is_flag=True,
              help="Copy what refers to each image too (signatures, SBOMs), as every "
                   "source's 'referrers: true' does.")
@click.pass_context
def command(ctx: click.Context, args: tuple[str, ...], dry_run: bool, prune: bool,
            events_to: str | None, shard: str | None, jobs: int | None, fmt: str,
            with_referrers: bool) -> None:
    """Keep mirrors of many images up to date (docs/sync.md).

    \b
    occystrap sync CONFIG.yaml
    occystrap sync 'registry://SRC/team/*:v*' 'registry://MIRROR/team/{repo}:{tag}'

    Exit status: 0 all good, 1 some images failed, 2 could not run.
    """
    from ..errors import OccystrapError

    occy = ctx.find_object(_context_type())
    assert occy is not None
    source = ctx.find_root().get_parameter_source("image_parallel") if ctx.find_root() else None
    if jobs is not None:
        occy.settings.image_parallel = jobs
    elif source is not None and source.name == "DEFAULT":
        occy.settings.image_parallel = 8
    try:
        code = execute(occy, args, dry_run=dry_run, prune=prune, events_to=events_to,
                       shard=shard, fmt=fmt, referrers=with_referrers)
    except OccystrapError as e:
        e.exit_code = EXIT_CANNOT_RUN
        raise
    ctx.exit(code)


def _context_type() -> type:
    from ..context import Context

    return Context
