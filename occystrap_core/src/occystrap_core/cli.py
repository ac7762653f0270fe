"""The ``occystrap`` command line.

Importing this module loads no plugin and no HTTP library. Plugins are loaded
once per run, before the command line is parsed, since their global options are
part of it (see :mod:`.globalopts`); their entry-point modules are cheap to
import, and one that is broken is a warning, so ``occystrap --help`` stays fast
and works.
"""

from __future__ import annotations

# isort: off
from . import exiting  # first: its atexit handler must be called after those of the rest
# isort: on
import contextlib
import gc
import importlib
import io
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

import click

from . import __version__, completion, outputformat, redact
from .clitypes import Finite, MediaType, NamedPath, seconds
from .context import Context, Settings
from .errors import OccystrapError, PluginConflictError, URIError
from .oci import platform as platforms
from .oci.platform import Platform

# The core's commands that live in modules of their own, imported only when run or
# listed: a run of ``process`` does not pay for ``sync``, ``login`` or 0.4.17's aliases.
_LEGACY = ("fetch-to-extracted", "fetch-to-oci", "fetch-to-tarfile", "fetch-to-mounts",
           "recreate-image", "tarfile-to-extracted", "docker-to-tarfile",
           "docker-to-extracted", "docker-to-oci", "search-layers", "search-layers-docker",
           "search-layers-tarfile")  # hidden: each prints the command it runs
LAZY_COMMANDS = {
    "sync": "occystrap_core.sync.command:command",
    "login": "occystrap_core.login:login_command",
    "logout": "occystrap_core.login:logout_command",
    **{name: f"occystrap_core.ops_commands:{name}" for name in (
        "tags", "catalog", "manifest", "config", "digest", "tag", "delete", "export")},
    **{name: f"occystrap_core.legacy:{name.replace('-', '_')}" for name in _LEGACY},
}


class OccystrapGroup(click.Group):
    """Turns expected errors into one ``Error:`` line, and crashes into a hint."""

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True,
             **extra: Any) -> Any:
        """click's own, except that its usage errors pass the one redaction too: they
        quote what was typed, URIs with passwords included."""
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except OccystrapError as e:  # a plugin conflict, found while the options were read
            _error(str(e))
            sys.exit(e.exit_code)
        except click.ClickException as e:
            shown = io.StringIO()
            e.show(file=shown)
            click.echo(redact.redact_text(shown.getvalue()), err=True, nl=False)
            sys.exit(e.exit_code)
        except click.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        """Load the run's plugins first: their global options are part of the command line."""
        from . import globalopts
        from .plugins import load_plugins

        plugins = ctx.meta[PLUGINS] = load_plugins(globalopts.disabled_in(args))
        ctx.meta[PLUGIN_PARAMS] = globalopts.click_options(plugins, super().get_params(ctx))
        self._plugin_commands(ctx)  # a command claimed twice fails every run, as options do
        from .hoisting import hoist

        return super().parse_args(ctx, hoist(self, ctx, args))

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *LAZY_COMMANDS,
                       *self._plugin_commands(ctx)})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            return command
        if cmd_name in LAZY_COMMANDS:
            module, _, attr = LAZY_COMMANDS[cmd_name].partition(":")
            command = getattr(importlib.import_module(module), attr)
            self.add_command(command, cmd_name)
            return command
        built = ctx.meta.setdefault(BUILT, {})  # once a run: a failure warns once
        if cmd_name not in built:
            built[cmd_name] = self._build(ctx, cmd_name)
        return built[cmd_name]

    def _build(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = self._plugin_commands(ctx).get(cmd_name)
        if entry is None:
            return None
        try:
            built = entry.item.factory()
            if not isinstance(built, click.Command):
                raise TypeError(f"it returned {type(built).__name__}, not a click command")
        except Exception as e:  # one broken plugin must not take the CLI down
            click.echo(f"Warning: plugin {entry.record.label} failed to build command "
                       f"{cmd_name!r} ({type(e).__name__}: {e}); disable it with "
                       f"--disable-plugin {entry.record.name}", err=True)
            return None
        return built

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """click's own, except that plugin commands show their summary: listing them
        imports none of their modules."""
        plugin = self._plugin_commands(ctx)
        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max(map(len, names), default=0)
        rows = []
        for name in names:
            if name in plugin:
                rows.append((name, plugin[name].item.summary))
                continue
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((name, command.get_short_help_str(limit)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def _plugin_commands(self, ctx: click.Context) -> dict[str, Any]:
        """The plugins' commands by name; a name the core has is a conflict."""
        from .plugins import CORE

        plugins = ctx.find_root().meta.get(PLUGINS)
        if plugins is None:
            return {}
        commands = dict(plugins.commands)
        for name in commands.keys() & {*self.commands, *LAZY_COMMANDS}:
            raise PluginConflictError(
                f"command {name!r} is claimed by both {CORE} {__version__} and "
                f"{commands[name].record.label}; disable it with --disable-plugin "
                f"{commands[name].record.name}")
        return commands

    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        params = super().get_params(ctx)
        own = len(self.params)  # click adds --help after them
        return params[:own] + ctx.meta.get(PLUGIN_PARAMS, []) + params[own:]

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except OccystrapError as e:
            _error(str(e))
            ctx.exit(e.exit_code)
        except KeyboardInterrupt as e:
            signum = getattr(e, "signum", signal.SIGINT)
            _error(f"interrupted ({signal.Signals(signum).name}); what was written is removed")
            ctx.exit(128 + signum)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except BrokenPipeError:
            # stdout's reader went away (| head): ended as any Unix tool is by SIGPIPE,
            # which Python ignores; later writes to stdout (a flush at exit) go nowhere
            with contextlib.suppress(OSError, ValueError):  # ValueError: not a real file
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            ctx.exit(128 + signal.SIGPIPE)
        except Exception as e:
            occy = ctx.find_object(Context)
            if isinstance(e, OSError) and e.errno is not None:
                # the machine, not occystrap: a full disk, a read-only file system, a quota
                from . import diskerrors

                where = e.filename or diskerrors.where(ctx.meta.get(WRITING),
                                                       occy.made_temp_dir if occy else None)
                _error(f"{e.strerror}" + (f": {where}" if where else ""))
                ctx.exit(1)
            debug = bool(occy and (occy.settings.debug or occy.settings.verbose))
            if debug:
                import traceback

                click.echo(redact.redact_text(traceback.format_exc()), err=True, nl=False)
            _error(f"unexpected {type(e).__name__}: {e}")
            click.echo(_bug_in(ctx, e, debug), err=True)
            ctx.exit(1)


def _bug_in(ctx: click.Context, error: Exception, debug: bool) -> str:
    """Whose bug an unexpected error may be: a third-party plugin's only where the
    traceback passes through its own code, else occystrap's."""
    from .plugins import blamed

    culprits = blamed(ctx.find_root().meta.get(PLUGINS), error)
    if culprits:
        names = " or ".join(f"--disable-plugin {r.name}" for r in culprits)
        return f"This may be a bug in {', '.join(r.label for r in culprits)}; try {names}" + \
            ("" if debug else ", or --debug for a traceback")
    return f"This is a bug in occystrap {__version__}" + \
        ("" if debug else "; rerun with --debug for a traceback")


WRITING = "occystrap.writing"  # click context meta: the destination being written
PLUGINS = "occystrap.plugins"  # click context meta: the run's plugins
PLUGIN_PARAMS = "occystrap.plugin_params"  # click context meta: their global options
BUILT = "occystrap.built_commands"  # click context meta: plugin commands built, by name


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived; ``signum`` says which."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _catch_signals(ctx: click.Context, occy: Context) -> None:
    """Ctrl-C and SIGTERM stop the run the same way: work in progress is told to stop
    at its next chunk, queued work never starts, and the output cleans up."""
    if threading.current_thread() is not threading.main_thread():
        return  # signal handlers belong to the main thread

    def stop(signum: int, frame: object) -> None:
        occy.cancel.set()
        raise Interrupted(signum)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    ctx.call_on_close(lambda: [signal.signal(sig, h) for sig, h in previous.items()])


def _error(message: str) -> None:
    """The one ``Error:`` line: redacted, and one line however the message was written."""
    click.echo("Error: " + " ".join(redact.redact_text(message).split()), err=True)


def parse_platform(value: str) -> Platform:
    try:
        return platforms.parse(value)
    except URIError:
        raise click.BadParameter(f"expected OS/ARCH[/VARIANT], got {value!r}",
                                 param_hint="'--platform' (or OCCYSTRAP_PLATFORM)") from None


def _setup_logging(settings: Settings) -> None:
    level = logging.DEBUG if settings.debug else \
        logging.INFO if settings.verbose else logging.WARNING
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    # Every record this handler prints is redacted: httpx logs URLs (signed query
    # strings), httpcore traces headers, and any message may quote a URI.
    redact.install(handler)
    root = logging.getLogger("occystrap")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    if settings.debug:
        for name in ("httpx", "httpcore"):
            logger = logging.getLogger(name)
            logger.setLevel(logging.INFO)
            logger.handlers[:] = [handler]
            logger.propagate = False


@click.group(cls=OccystrapGroup, context_settings={"help_option_names": ["-h", "--help"],
                                                   "max_content_width": 100})
@click.option("--verbose", "-v", is_flag=True, help="Log progress details.")
@click.option("--debug", is_flag=True,
              help="Log everything, including HTTP traffic (secrets redacted).")
@click.option("-j", "--parallel", type=click.IntRange(1, 64), default=4, show_default=True,
              envvar="OCCYSTRAP_PARALLEL", help="Layers transferred at once.")
@click.option("-J", "--image-parallel", type=click.IntRange(1, 64), default=3, show_default=True,
              envvar="OCCYSTRAP_IMAGE_PARALLEL",
              help="Images transferred at once when a source names several (quay://).")
@click.option("--retries", type=click.IntRange(0, 100), default=3, show_default=True,
              envvar="OCCYSTRAP_RETRIES", help="Retries per HTTP request (every plugin).")
@click.option("--rate-limit", type=Finite(min=0, min_open=True), default=None,
              envvar="OCCYSTRAP_RATE_LIMIT",
              help="Requests per second per host, shared by all threads. [default: unlimited]")
@click.option("--http2/--no-http2", default=True, envvar="OCCYSTRAP_HTTP2",
              help="HTTP/2 over TLS for manifests, HEADs and tokens.  [default: http2]")
@click.option("--insecure", is_flag=True, help="Use plain HTTP for registries.")
@click.option("--username", envvar="OCCYSTRAP_USERNAME", help="Registry username (both ends).")
@click.option("--password", envvar="OCCYSTRAP_PASSWORD", help="Registry password (both ends).")
@click.option("--src-username", envvar="OCCYSTRAP_SRC_USERNAME", help="Source registry username.")
@click.option("--src-password", envvar="OCCYSTRAP_SRC_PASSWORD", help="Source registry password.")
@click.option("--dest-username", envvar="OCCYSTRAP_DEST_USERNAME", help="Destination username.")
@click.option("--dest-password", envvar="OCCYSTRAP_DEST_PASSWORD", help="Destination password.")
@click.option("--ca-cert", envvar="OCCYSTRAP_CA_CERT", type=NamedPath(exists=True),
              help="CA bundle (or a directory of *.crt, as skopeo's --cert-dir) to verify "
              "registry TLS certificates with.")
@click.option("--tls-verify", type=click.BOOL, default=True, envvar="OCCYSTRAP_TLS_VERIFY",
              metavar="BOOL", help="--tls-verify=false accepts any registry certificate "
              "(self-signed ones; ?tls_verify=false for one URI).  [default: true]")
@click.option("--client-cert", envvar="OCCYSTRAP_CLIENT_CERT",
              type=NamedPath(exists=True, dir_okay=False),
              help="Client certificate (PEM) for TLS.")
@click.option("--client-key", envvar="OCCYSTRAP_CLIENT_KEY",
              type=NamedPath(exists=True, dir_okay=False),
              help="Key of the client certificate.")
@click.option("--connect-timeout", type=seconds(above_zero=True), default=10.0,
              show_default=True,
              envvar="OCCYSTRAP_CONNECT_TIMEOUT", help="Seconds to wait for a connection.")
@click.option("--timeout", "read_timeout", type=seconds(above_zero=True),
              default=30.0, show_default=True, envvar="OCCYSTRAP_TIMEOUT",
              help="Seconds to wait for data.")
@click.option("--min-speed", type=click.IntRange(min=0), default=1024, show_default=True,
              envvar="OCCYSTRAP_MIN_SPEED", metavar="BYTES",
              help="Bytes per second every answer must keep up over --timeout seconds "
                   "(else it is retried as a timeout); 0: no minimum.")
@click.option("--platform", "platform_", default=None, envvar="OCCYSTRAP_PLATFORM",
              help="Platform to pick from a multi-platform image: OS/ARCH[/VARIANT].")
@click.option("--os", "os_", default=None, help="Platform OS (default: linux).")
@click.option("--architecture", default=None, help="Platform architecture (default: this host's).")
@click.option("--variant", default=None, help="Platform variant.")
@click.option("--all-platforms", is_flag=True, envvar="OCCYSTRAP_ALL_PLATFORMS",
              help="Copy every platform of a multi-platform image, and its index.")
@click.option("--temp-dir", envvar="OCCYSTRAP_TEMP_DIR",
              type=NamedPath(exists=True, file_okay=False, writable=True),
              help="Where temporary files go.")
@click.option("--progress/--no-progress", "progress_bars", default=True,
              help="Progress bars when stderr is a terminal; --no-progress: plain lines.")
@click.option("--progress-interval", type=seconds(), default=10.0,
              show_default=True, envvar="OCCYSTRAP_PROGRESS_INTERVAL",
              help="Seconds between plain progress lines (no terminal, or --no-progress); 0: none.")
@click.option("--verify/--no-verify", default=True, envvar="OCCYSTRAP_VERIFY",
              help="After process, re-read what was written: documents re-hashed, blob sizes "
                   "checked.  [default: verify]")
@click.option("--verify-full", is_flag=True, envvar="OCCYSTRAP_VERIFY_FULL",
              help="Verify by re-hashing every blob written too (slower; implies --verify).")
@click.option("--layer-cache", type=NamedPath(file_okay=False), default=None,
              envvar="OCCYSTRAP_LAYER_CACHE", metavar="DIR",
              help="Remember filtered and recompressed layers here, so later copies skip "
                   "that work (docs/cache.md).")
@click.option("-O", "--output-format", type=click.Choice(outputformat.FORMATS), default=None,
              help="Default output format of every command with its own -O.")
@click.option("--disable-plugin", "disabled", multiple=True, metavar="NAME",
              help="Do not load this plugin (repeatable; also OCCYSTRAP_DISABLE_PLUGINS=a,b).")
@click.option("--version", is_flag=True, expose_value=False, is_eager=True,
              callback=lambda ctx, _, value: _print_version(ctx, value),
              help="Show the version of occystrap and its plugins, and exit.")
@click.pass_context
def cli(ctx: click.Context, platform_: str | None, os_: str | None,
        architecture: str | None, variant: str | None, disabled: tuple[str, ...],
        output_format: str | None, **options: Any) -> None:
    """Move container images between registries, daemons, archives and directories.

    Sources and destinations are URIs such as registry://HOST/REPO:TAG or
    tar://PATH; `occystrap process --help` lists the schemes installed plugins
    provide.
    """
    platform = None  # this host's, unless one is chosen
    if platform_ or os_ or architecture or variant is not None:
        base = parse_platform(platform_) if platform_ else platforms.host()
        platform = Platform(os_ or base.os, architecture or base.architecture,
                            variant if variant is not None else base.variant)
    from .globalopts import VALUES

    settings = Settings(platform=platform, disabled_plugins=disabled,
                        plugin_options=ctx.meta.get(VALUES, {}), **options)
    _setup_logging(settings)
    if output_format:
        ctx.default_map = outputformat.FormatDefaults(output_format)
    occy = ctx.with_resource(Context(settings, ctx.meta[PLUGINS]))
    ctx.obj = occy
    _catch_signals(ctx, occy)


def _print_version(ctx: click.Context, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    click.echo(f"occystrap {__version__}")
    for record in ctx.meta[PLUGINS].records:
        if not record.builtin:
            click.echo(f"  {record.label} ({record.status})")
    ctx.exit()


def _occy(ctx: click.Context) -> Context:
    occy = ctx.find_object(Context)
    assert occy is not None, "the group callback makes the Context"
    return occy


def _scheme_help(occy: Context) -> str:
    try:
        inputs, outputs = occy.plugins.inputs, occy.plugins.outputs
        filters = occy.plugins.filters
    except OccystrapError as e:
        return f"(plugins could not be listed: {e})"

    def rows(table: Any) -> list[tuple[str, str]]:
        return [(f"{scheme}://", f"{e.item.summary} [{e.record.distribution}]")
                for scheme, e in table]

    out = []
    for title, table_rows in (("Sources", rows(inputs)), ("Destinations", rows(outputs)),
                              ("Filters (-f)", [(n, f"{e.item.summary} [{e.record.distribution}]")
                                                for n, e in filters])):
        out.append(f"{title}:")
        out += [f"  {k:<16} {v}" for k, v in table_rows] or ["  (none installed)"]
    return "\n".join(out)


class SchemeHelpCommand(click.Command):
    """A command whose help ends with the schemes the loaded plugins provide, and
    whose options complete with the global ones it takes after its name."""

    def shell_complete(self, ctx: click.Context, incomplete: str
                       ) -> list[completion.CompletionItem]:
        return super().shell_complete(ctx, incomplete) + \
            completion.global_options(ctx, incomplete)

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        occy = _occy(ctx)
        if occy is None:
            return
        formatter.write_paragraph()
        with formatter.indentation():
            for line in _scheme_help(occy).splitlines():
                formatter.write(line.rstrip() + "\n")


def _summary(occy: Context, elapsed: float) -> str:
    from .info import human_size

    s = occy.stats
    # layers, skipped and mounted always, so every output's line reads the same
    parts = [f"{s['layers']} layers ({s['skipped']} skipped, {s['mounted']} mounted)",
             human_size(s["bytes"]), f"{elapsed:.1f} s"]
    parts += [f"{s[k]} {label}" for k, label in (("cache_hits", "cache hits"),
                                                 ("retries", "retries"),
                                                 ("rate_limit_waits", "rate-limit waits")) if s[k]]
    return "Summary: " + ", ".join(parts)


@cli.command(cls=SchemeHelpCommand)
@click.argument("source", shell_complete=completion.sources)
@click.argument("destination", shell_complete=completion.destinations)
@click.option("-f", "--filter", "filters", multiple=True, metavar="FILTER",
              help="NAME[:key=value,...]; repeatable, the first sees layers first.")
@click.option("--dry-run", is_flag=True,
              help="Print SOURCE -> DESTINATION per image; copy nothing.")
@click.option("--referrers", "with_referrers", is_flag=True,
              help="Copy what refers to the image too (signatures, SBOMs, attestations).")
@click.option("--referrer-type", "referrer_types", multiple=True, metavar="TYPE",
              help="With --referrers: only those of this artifactType (repeatable).")
@click.option("--digest-tags", is_flag=True,
              help="With --referrers: copy cosign's legacy tags too (sha256-HEX.sig, .att, "
                   ".sbom).")
@click.option("--stale-referrers", is_flag=True,
              help="With --referrers: copy them even when filters changed the image, so "
                   "that they name the source's digest.")
@outputformat.option(help="On stdout: DESTINATION@DIGEST, or a JSON report of what was "
                          "written.")
@click.option("--digestfile", metavar="FILE", type=NamedPath(dir_okay=False),
              help="Write the manifest digest to FILE.")
@click.pass_context
def process(ctx: click.Context, source: str, destination: str, filters: tuple[str, ...],
            dry_run: bool, with_referrers: bool, referrer_types: tuple[str, ...],
            stale_referrers: bool, digest_tags: bool, fmt: str, digestfile: str | None) -> None:
    """Copy the image at SOURCE to DESTINATION, through any filters.

    When SOURCE names several images (quay://NAMESPACE/REPO_GLOB:TAG_GLOB), DESTINATION
    is a template such as registry://HOST/mirror/{repo}:{tag} (see docs/quay.md).
    """
    from . import copyreport, library, pipeline
    from .api import ImageSet
    from .engine import load
    from .errors import UsageError
    from .progress import create as create_progress

    if digestfile:
        copyreport.check_digestfile(digestfile)
    occy = _occy(ctx)
    occy.progress = create_progress(occy.settings)  # pipeline.run ends it before the summary
    ctx.meta[WRITING] = redact.redact_uri(destination)  # for a full disk's error line
    started = time.monotonic()
    with pipeline.build_input(occy, source) as image_input:
        if isinstance(image_input, ImageSet):
            from .bulk import process_command

            if digestfile:
                raise UsageError(f"{source} names several images; --digestfile takes one")
            if with_referrers:
                raise UsageError(f"{source} names several images; --referrers takes one "
                                 f"(sync --referrers copies many with theirs)")
            ctx.exit(process_command(occy, image_input, destination, filters, dry_run=dry_run,
                                     summary=lambda: _summary(occy, time.monotonic() - started),
                                     fmt=fmt))
        if dry_run:
            # what a run would read first, and the destination: either may be wrong
            load(occy, image_input)
            pipeline.resolve(occy, destination, "output")
            click.echo(f"{redact.redact_uri(source)} -> {redact.redact_uri(destination)}")
            return
        result = library.copy(image_input, destination, filters=filters, session=occy,
                              referrers=with_referrers, referrer_types=referrer_types,
                              stale_referrers=stale_referrers, digest_tags=digest_tags)
    click.echo(f"Wrote {redact.redact_uri(result.location)}" +
               (f" ({result.manifest_digest})" if result.manifest_digest else ""), err=True)
    if "referrers_skipped" in result.details:
        click.echo(f"Warning: {result.details['referrers_skipped']}", err=True)
    elif with_referrers:
        click.echo(f"Copied {len(result.details['referrers'])} referrers" +
                   (f" and {len(result.details['digest_tags'])} digest tags"
                    if digest_tags else ""), err=True)
    # what re-reading the output found; None if it cannot be re-read, or --no-verify
    problems = result.problems
    for problem in problems or ():
        click.echo(f"Verify: {problem}", err=True)
    verified = "" if problems is None else \
        f", verify failed ({len(problems)} problems)" if problems else ", verified"
    click.echo(_summary(occy, time.monotonic() - started) + verified, err=True)
    click.echo(json.dumps(copyreport.as_dict(destination, result.location,
                                             result.manifest_digest, result.media_type,
                                             result.stats, problems), indent=2)
               if fmt == "json" else copyreport.line(destination, result.manifest_digest),
               err=copyreport.on_stdout(result.location))
    if problems:
        ctx.exit(1)
    if digestfile:
        copyreport.write_digestfile(digestfile, result.manifest_digest, destination)


@cli.command(cls=SchemeHelpCommand)
@click.argument("source", shell_complete=completion.sources)
@outputformat.option()
@click.pass_context
def info(ctx: click.Context, source: str, fmt: str) -> None:
    """Describe the image at SOURCE without downloading its layers."""
    from . import library, pipeline
    from .api import ImageSet
    from .info import as_text

    with pipeline.build_input(_occy(ctx), source) as image_input:
        if isinstance(image_input, ImageSet):
            from .bulk import info_command

            ctx.exit(info_command(_occy(ctx), image_input, fmt))
        details = library.inspect(image_input, session=_occy(ctx))
    click.echo(json.dumps(details, indent=2) if fmt == "json" else as_text(details))


@cli.command(cls=SchemeHelpCommand)
@click.argument("source", shell_complete=completion.sources)
@click.option("--fast", is_flag=True, help="Check the manifest and config only; read no layer.")
@outputformat.option()
@click.pass_context
def check(ctx: click.Context, source: str, fast: bool, fmt: str) -> None:
    """Validate the image at SOURCE; exit 1 if anything is wrong."""
    from . import library
    from .bulk import single_input
    from .check import Report

    try:
        with single_input(_occy(ctx), source, "check") as image_input:
            report = library.check(image_input, fast=fast, session=_occy(ctx))
    except OccystrapError as e:
        if fmt != "json":
            raise
        # scripts read the JSON whatever happened, people the Error line as ever
        _error(str(e))
        report = Report(redact.redact_uri(source), "fast" if fast else "full")
        report.add("error", "open", " ".join(redact.redact_text(str(e)).split()))
    click.echo(json.dumps(report.as_dict(), indent=2) if fmt == "json" else report.as_text())
    if report.count("error"):
        ctx.exit(1)


@cli.command(cls=SchemeHelpCommand)
@click.argument("source", shell_complete=completion.sources)
@click.option("--artifact-type", metavar="TYPE", type=MediaType(),
              help="Only referrers of this artifactType.")
@outputformat.option()
@click.pass_context
def referrers(ctx: click.Context, source: str, artifact_type: str | None, fmt: str) -> None:
    """List what refers to the image at SOURCE (signatures, SBOMs, attestations), as a tree."""
    from . import library
    from .bulk import single_input
    from .oci.referrers import as_text

    with single_input(_occy(ctx), source, "referrers") as image_input:
        found = library.referrers(image_input, artifact_type=artifact_type, session=_occy(ctx))
    if fmt == "json":
        click.echo(json.dumps(found, indent=2))
        return
    click.echo(found["subject"])
    for line in as_text(found["referrers"]):
        click.echo(line)
    for legacy in found["legacy_tags"]:
        click.echo(f"legacy tag {legacy['tag']} -> {legacy['digest']}")


@cli.command(cls=SchemeHelpCommand)
@click.argument("source", shell_complete=completion.sources)
@click.argument("pattern")
@click.option("--regex", is_flag=True, help="PATTERN is a regular expression (re.search).")
@click.option("--script-friendly", is_flag=True, help="Print NAME:TAG:LAYER:PATH lines only.")
@click.pass_context
def search(ctx: click.Context, source: str, pattern: str, regex: bool,
           script_friendly: bool) -> None:
    """List the files in SOURCE's layers whose path matches PATTERN (a glob by default)."""
    from . import pipeline
    from .bulk import single_input
    from .filters.search import Search
    from .outputs.null import NullOutput

    occy = _occy(ctx)
    with single_input(occy, source, "search") as image_input:
        pipeline.run(occy, image_input, Search(NullOutput(), pattern, regex, script_friendly))


@cli.group()
def plugins() -> None:
    """Inspect installed plugins."""


@plugins.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def plugins_list(ctx: click.Context, as_json: bool) -> None:
    """Show every plugin: distribution, version, status, schemes and hooks."""
    records = _occy(ctx).plugins.records
    if as_json:
        click.echo(json.dumps([r.as_dict() for r in records], indent=2))
        return
    for r in records:
        d = r.as_dict()
        click.echo(f"{r.name} ({r.label}) {r.status}" + (f": {r.error}" if r.error else ""))
        for key, label in (("input_schemes", "inputs"), ("output_schemes", "outputs"),
                           ("filters", "filters"), ("client_factories", "clients"),
                           ("global_options", "options"), ("commands", "commands"),
                           ("listers", "listers")):
            if d[key]:
                click.echo(f"  {label}: {', '.join(d[key])}")
        if r.hooks:
            click.echo(f"  hooks: {', '.join(r.hooks)}")


@cli.group()
def cache() -> None:
    """Inspect and prune the layer cache (--layer-cache DIR)."""


def _layer_cache(ctx: click.Context) -> Any:
    from .errors import UsageError
    from .layercache import LayerCache

    directory = _occy(ctx).settings.layer_cache
    if not directory:
        raise UsageError("name the cache directory with --layer-cache DIR "
                         "(or OCCYSTRAP_LAYER_CACHE)")
    return ctx.with_resource(contextlib.closing(LayerCache(directory, create=False)))


@cache.command("info")
@outputformat.option()
@click.pass_context
def cache_info(ctx: click.Context, fmt: str) -> None:
    """Show what the layer cache holds and its size."""
    from .layercache import describe

    details = _layer_cache(ctx).info()
    click.echo(json.dumps(details, indent=2) if fmt == "json" else describe(details))


@cache.command("prune")
@click.option("--max-age", metavar="DURATION",
              help="Drop entries unused for this long: 30d, 12h, 45m, 90s.")
@click.option("--max-size", metavar="SIZE",
              help="Then drop the least recently used until the cache is this small: "
                   "64M, 1G (powers of 1024).")
@click.pass_context
def cache_prune(ctx: click.Context, max_age: str | None, max_size: str | None) -> None:
    """Drop least recently used entries of the layer cache, and compact it."""
    from .errors import UsageError
    from .info import human_size
    from .layercache import parse_duration, parse_size

    if max_age is None and max_size is None:
        raise UsageError("cache prune: give --max-age, --max-size, or both")
    age = parse_duration(max_age) if max_age is not None else None
    size = parse_size(max_size) if max_size is not None else None
    done = _layer_cache(ctx).prune(age, size)
    click.echo(f"Pruned {done['deleted']} entries: {human_size(done['size_before'])} -> "
               f"{human_size(done['size_after'])}")
    if not done["compacted"]:
        click.echo("Warning: the cache file could not be compacted: its file system is "
                   "full. The space pruned takes new entries; prune again once there is "
                   "room to shrink the file", err=True)


def main() -> None:
    """The console script: runs the CLI, and the process ends with it (:mod:`.exiting`)."""
    # httpcore imports trio, for its optional trio backend, whenever trio is installed:
    # about 80 ms of every run that talks HTTP, and occystrap runs on threads and
    # asyncio. Marking it absent (unless something imported it already) makes httpcore
    # take its documented path for an environment without trio.
    sys.modules.setdefault("trio", None)  # type: ignore[arg-type]  # None: "not importable"
    # Likewise httpx imports its own command line (rich and pygments, about 20 ms) when
    # those happen to be installed, and falls back to a stub when they are not; occystrap
    # never calls it (tests/test_packaging.py checks that httpx still imports).
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
    # What start-up created (modules, classes, functions) lives as long as the run: out
    # of the collector's way (the console script paused it while this module loaded:
    # see __main__), no full collection walks it again. The modules imported
    # on first use (httpx, the plugins' own) are long-lived too: about 30,000 objects
    # in a warm cached copy, which a young generation of 700 (the default) collected
    # 38 times and one of 20,000 once (2.4 ms of 0.15 s); at 50,000, none walks them.
    # What is freed as it goes is not counted: a long run collects after every 50,000
    # new objects that stay, so cyclic garbage waits for it (a few MB at most).
    gc.freeze()
    gc.set_threshold(50_000, *gc.get_threshold()[1:])
    gc.enable()
    with exiting.program():  # the process ends with the run
        cli(prog_name="occystrap")
