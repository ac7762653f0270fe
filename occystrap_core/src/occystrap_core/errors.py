"""Expected errors.

Anything raised as an :class:`OccystrapError` is a failure the user can act on:
the CLI prints ``Error: <message>`` on one line and exits 1, without a traceback.
Any other exception is a bug, and the CLI says which plugin to disable.
"""

from __future__ import annotations

import re
from typing import Any

#: What ``json.loads`` raises for a document it cannot read: ``ValueError`` (not JSON,
#: not UTF-8) and ``RecursionError`` (arrays or objects nested deeper than the
#: interpreter's recursion limit, which a hostile registry or archive can send).
NOT_JSON = (ValueError, RecursionError)

#: What ``re.compile`` raises for a pattern the user gave: ``re.error``, ``OverflowError``
#: (a repeat count such as ``a{99999999999}``) and ``RecursionError`` (groups nested
#: thousands deep).
NOT_A_REGEX = (re.error, OverflowError, RecursionError)


class OccystrapError(Exception):
    """A failure the user can act on, printed as one ``Error:`` line. ``response`` is
    the (read, closed) HTTP answer it came from, when it came from one."""

    exit_code = 1
    response: Any = None


class UsageError(OccystrapError):
    """Bad options or arguments."""


class URIError(OccystrapError):
    """A malformed or unsupported URI or image reference."""


class UnknownSchemeError(URIError):
    """No loaded plugin handles this scheme."""


class PluginConflictError(OccystrapError):
    """Two plugins claim the same scheme or name."""


class PluginLoadError(OccystrapError):
    """A plugin failed to import or validate (raised only in strict mode)."""


class ImageNotFoundError(OccystrapError):
    """The named image, tag, file or blob does not exist."""


class PlatformMismatchError(ImageNotFoundError):
    """A single-platform image for none of the platforms a subset (``?platforms=``)
    asked for: there is nothing of that subset to copy."""


class CorruptImageError(OccystrapError):
    """An archive, manifest, config or layer is malformed."""


class DigestMismatchError(CorruptImageError):
    """Content does not hash to the digest it was announced with."""

    def __init__(self, what: str, expected: str, actual: str):
        super().__init__(f"{what}: digest mismatch, expected {expected}, got {actual}")
        self.expected = expected
        self.actual = actual


class UnsupportedError(OccystrapError):
    """A format or feature that occystrap does not support."""


class TransportError(OccystrapError):
    """A network failure that retries did not cure.

    ``retryable`` says whether trying again later could cure it (a reset or a
    timeout, not a refused TLS certificate): callers that retry whole operations
    (a resumed download, a restarted upload) look at it.
    """

    def __init__(self, message: str, *, retryable: bool = False):
        super().__init__(message)
        self.retryable = retryable


class AuthError(TransportError):
    """Credentials were refused or missing."""


class CredentialsError(AuthError):
    """The credentials themselves were refused, or none were given where the registry
    requires them: not one repository's access, but every request with them."""


class OutputExistsError(OccystrapError):
    """The destination exists and would be overwritten."""
