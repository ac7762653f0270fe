"""Per-registry certificate directories, where Docker, podman and skopeo find them.

The first of ``~/.config/containers/certs.d/HOST[:PORT]``,
``/etc/containers/certs.d/HOST[:PORT]`` and ``/etc/docker/certs.d/HOST[:PORT]`` that
exists applies to that host (containers-certs.d(5)): each ``*.crt`` in it is a CA
trusted for that host on top of the run's roots (``--ca-cert`` or the system's), and
``NAME.cert`` with ``NAME.key`` a client certificate it is offered. So a registry a
``docker``/``podman`` user trusts that way works without ``--ca-cert``. ``--ca-cert``
may name such a directory too (skopeo's ``--cert-dir``): its CAs alone are trusted.
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path

from ..errors import UsageError
from .tlscontext import load_key_pair

ROOTS = ("~/.config/containers/certs.d", "/etc/containers/certs.d", "/etc/docker/certs.d")


def cert_dir(netloc: str) -> str | None:
    """The certificate directory of ``HOST[:PORT]``, or None."""
    for root in ROOTS:
        path = Path(root).expanduser() / netloc
        if path.is_dir():
            return str(path)
    return None


def ca_data(directory: str) -> str:
    """The PEM text of ``directory``'s ``*.crt``: its CAs alone, for a context that
    trusts nothing else (``--ca-cert DIR``, as skopeo's ``--cert-dir``)."""
    crts = sorted(n for n in os.listdir(directory) if n.endswith(".crt"))
    if not crts:
        raise UsageError(f"cannot load TLS certificates ({directory}): no *.crt in it")
    texts = []
    for name in crts:
        path = Path(directory, name)
        try:
            texts.append(path.read_bytes().decode())
        except UnicodeDecodeError:  # a ValueError: the caller's OSError would miss it
            raise UsageError(f"cannot load TLS certificates ({path}): not PEM text (DER? "
                             f"openssl x509 -inform der converts it)") from None
    return "\n".join(texts)


def load(context: ssl.SSLContext, directory: str, *, client: bool) -> None:
    """Add ``directory``'s CAs to ``context``, and its client certificate when ``client``
    (none was given on the command line)."""
    names = set(os.listdir(directory))
    for name in sorted(names):
        path = os.path.join(directory, name)
        if name.endswith(".crt"):
            context.load_verify_locations(cafile=path)
        elif name.endswith(".cert") or name.endswith(".key"):
            pair = name[:-len(".cert")] + ".key" if name.endswith(".cert") \
                else name[:-len(".key")] + ".cert"
            if pair not in names:
                raise UsageError(f"cannot load TLS certificates ({path}): "
                                 f"{pair} is missing next to it")
            if client and name.endswith(".cert"):
                load_key_pair(context, path, os.path.join(directory, pair))
