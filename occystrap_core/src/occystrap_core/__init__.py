"""occystrap core: hook specifications, plugin manager, copy engine, CLI.

This module is imported by every plugin's entry-point module, so it stays light:
no httpx, no click.
"""

import pluggy

__version__ = "0.5.0"

hookimpl = pluggy.HookimplMarker("occystrap")
"""Marker for occystrap hook implementations: ``@occystrap_core.hookimpl``."""

#: The public API, in one place: the modules a plugin (or a library user, through the
#: :mod:`occystrap` package) may import. Everything else is private and may change;
#: so is any name starting with ``_``. tests/test_plugin_boundary.py holds plugins to it.
PUBLIC_MODULES = (
    "occystrap_core",  # hookimpl, __version__
    "occystrap_core.hookspecs",  # the hooks: their docstrings are the reference
    "occystrap_core.types",  # what hooks return: InputSource, OutputTarget, OptionSpec...
    "occystrap_core.api",  # ImageSource, ImageInput, ImageOutput, ImageFilter, Image, Layer
    "occystrap_core.errors",
    "occystrap_core.context",  # Context, Settings
    "occystrap_core.engine",  # load, Selection: for commands and tests
    "occystrap_core.library",  # copy, inspect, check (as re-exported by occystrap)
    "occystrap_core.layercache",  # the --layer-cache store (Context.layer_cache)
    "occystrap_core.listing",  # many-image sources on listers: patterns and matching
    "occystrap_core.ops",  # tags, catalog, manifest, config, digest, tag, delete, export
    "occystrap_core.digest",
    "occystrap_core.mediatypes",
    "occystrap_core.streams",
    "occystrap_core.uri",
    "occystrap_core.clitypes",  # click types: Finite, seconds(), MAX_SECONDS, MediaType, NamedPath
    "occystrap_core.tempfiles",
    "occystrap_core.keyedlocks",  # one lock per key, while in use
    "occystrap_core.redact",  # the one redaction, for anything a plugin prints or logs
    "occystrap_core.serving",  # for plugins serving the Distribution API (proxy, dockerpush)
    # the format package: references, platforms, manifests, conversions
    "occystrap_core.oci",
    "occystrap_core.oci.reference",
    "occystrap_core.oci.platform",
    "occystrap_core.oci.manifest",
    "occystrap_core.oci.convert",
    # images on disk: docker-save archives, OCI layouts and archives
    "occystrap_core.archive",
    "occystrap_core.archive.stores",
    "occystrap_core.archive.blobs",
    "occystrap_core.archive.docker_save",
    "occystrap_core.archive.layout",
    "occystrap_core.archive.output",
    "occystrap_core.archive.verify",
    "occystrap_core.archive.writer",
    # what HTTP plugins build on (clients come from the transport hook)
    "occystrap_core.transport.auth",
    "occystrap_core.transport.blobs",
    "occystrap_core.transport.clock",
    "occystrap_core.transport.errors",
    "occystrap_core.transport.ranged",
    "occystrap_core.transport.retry",
    "occystrap_core.transport.tlscontext",  # load_key_pair: a certificate and key, no prompt
    # test helpers and fixtures (a pytest plugin)
    "occystrap_core.testing",
    "occystrap_core.testing.faults",
    "occystrap_core.testing.hostile",
    "occystrap_core.testing.http",
    "occystrap_core.testing.images",
    "occystrap_core.testing.processes",
    "occystrap_core.testing.referrers_api",
    "occystrap_core.testing.registry",
    "occystrap_core.testing.tokenserver",
)

__all__ = ["PUBLIC_MODULES", "__version__", "hookimpl"]
