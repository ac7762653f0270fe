"""occystrap as a library: copy, inspect and check container images and artifacts.

::

    import occystrap

    result = occystrap.copy("registry://registry.example/app:1.0",
                            "oci-layout://./mirror?ref=app-1.0", platform="linux/arm64")
    print(result.manifest_digest, result.stats["layers"])
    print(occystrap.inspect("oci-layout://./mirror?ref=app-1.0")["layers"])

The reference is docs/api.md. Schemes come from the installed plugins, as for the CLI.
"""

from occystrap_core import __version__, ops
from occystrap_core.check import Report
from occystrap_core.errors import OccystrapError
from occystrap_core.library import (
    CopyResult,
    Session,
    check,
    copy,
    copy_referrers,
    inspect,
    open_source,
    referrers,
    session,
    settings,
)

__all__ = ["CopyResult", "OccystrapError", "Report", "Session", "__version__", "check", "copy",
           "copy_referrers", "inspect", "open_source", "ops", "referrers", "session", "settings"]
