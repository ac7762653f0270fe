"""The ``oci-bundle://PATH`` output: an OCI runtime bundle that ``runc run`` accepts.

``PATH/rootfs`` is the merged root filesystem (extracted safely, whiteouts
applied) and ``PATH/config.json`` a runtime spec following the image-spec's
conversion rules (conversion.md), as umoci does: ``Env`` over a default ``PATH``
(and ``HOME`` from ``/etc/passwd``), ``Entrypoint`` + ``Cmd`` (``sh`` when the image
has neither), ``WorkingDir``, ``User`` (a name resolved from the image's
``/etc/passwd`` and ``/etc/group``), ``Volumes`` as tmpfs mounts, and labels, platform,
author, created, ``StopSignal`` and ``ExposedPorts`` as annotations. The bundle is
built in a temp directory and renamed into place at the end; PATH must not exist or
be an empty directory. A new PATH is built beside it and renamed whole; an empty
directory (maybe a mount point, which cannot be replaced) is kept, the bundle built
inside it and its ``rootfs`` and then ``config.json`` renamed into it.
"""

from __future__ import annotations

import json
import os
from typing import Any

from ..api import Image, ImageOutput, LayerData, OutputResult
from ..context import Context
from ..errors import CorruptImageError, OutputExistsError, URIError
from ..rootfs import TreeWriter
from ..tempfiles import TempDir, destination, sweep, write_atomic
from ..types import ResolvedURI
from .common import PRIVATE, local_path, refuse_dangling_link

DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_ARGS = ["sh"]  # runc spec's, which umoci and docker keep for an image without any
_IMAGE = "org.opencontainers.image."
_VOLUME_OPTIONS = ["rw", "nosuid", "nodev", "noexec", "relatime"]
_CAPS = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]  # runc spec's defaults


def _table(data: bytes | None, fields: int) -> list[list[str]]:
    if data is None:
        return []
    rows = []
    for line in data.decode("utf-8", "replace").splitlines():
        parts = line.split(":")
        if len(parts) >= fields and not line.startswith("#"):
            rows.append(parts)
    return rows


def resolve_user(user: str, passwd: bytes | None, group: bytes | None) -> dict[str, Any]:
    """The spec's ``process.user`` for the image's ``User`` (``name|uid[:group|gid]``)."""
    users, groups = _table(passwd, 4), _table(group, 3)
    name, _, grp = (user or "0").partition(":")
    if name.isdigit():
        uid = int(name)
        row = next((u for u in users if u[2] == name), None)
    else:
        row = next((u for u in users if u[0] == name), None)
        if row is None:
            raise CorruptImageError(f"user {name!r} is not in the image's /etc/passwd")
        uid = int(row[2])
    username = row[0] if row else None
    gid = int(row[3]) if row and row[3].isdigit() else 0
    if grp:
        if grp.isdigit():
            gid = int(grp)
        else:
            match = next((g for g in groups if g[0] == grp), None)
            if match is None:
                raise CorruptImageError(f"group {grp!r} is not in the image's /etc/group")
            gid = int(match[2])
    extra = sorted({int(g[2]) for g in groups if username and g[2].isdigit()
                    and username in g[3].split(",") and int(g[2]) != gid})
    return {"uid": uid, "gid": gid, **({"additionalGids": extra} if extra else {})}


def user_home(user: str, passwd: bytes | None) -> str | None:
    """The home directory ``/etc/passwd`` gives the image's ``User``, if any."""
    name = (user or "0").partition(":")[0]
    row = next((u for u in _table(passwd, 6) if u[2 if name.isdigit() else 0] == name), None)
    return row[5] if row and row[5] else None


def _env(image_env: Any, home: str | None) -> list[str]:
    """The default PATH, overridden by the image's variables of the same name."""
    env = [DEFAULT_PATH]
    names = ["PATH"]
    for entry in image_env or ():
        name = str(entry).partition("=")[0]
        if name in names:
            env[names.index(name)] = str(entry)
        else:
            env.append(str(entry))
            names.append(name)
    if home and "HOME" not in names:
        env.append(f"HOME={home}")
    return env


def spec_annotations(config: dict[str, Any]) -> dict[str, str]:
    """The image-spec conversion's annotations: labels, then the fields without a place
    of their own in a runtime spec."""
    cc = config.get("config") or {}
    out = {str(k): str(v) for k, v in (cc.get("Labels") or {}).items()}
    fields = {"os": config.get("os"), "architecture": config.get("architecture"),
              "variant": config.get("variant"), "os.version": config.get("os.version"),
              "os.features": ",".join(config.get("os.features") or ()),
              "author": config.get("author"), "created": config.get("created"),
              "stopSignal": cc.get("StopSignal"),
              "exposedPorts": ",".join(sorted(cc.get("ExposedPorts") or ()))}
    out.update({_IMAGE + k: str(v) for k, v in fields.items() if v})
    return out


def runtime_spec(config: dict[str, Any], user: dict[str, Any], hostname: str,
                 home: str | None = None) -> dict[str, Any]:
    """A runc ``config.json`` like ``runc spec`` writes, with the image's process."""
    cc = config.get("config") or {}
    args = list(cc.get("Entrypoint") or []) + list(cc.get("Cmd") or []) or list(DEFAULT_ARGS)
    env = _env(cc.get("Env"), home)
    volumes = [{"destination": v, "type": "tmpfs", "source": "none",
                "options": list(_VOLUME_OPTIONS)} for v in sorted(cc.get("Volumes") or ())]
    mounts = [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs",
         "options": ["nosuid", "noexec", "nodev", "ro"]},
    ] + volumes
    return {
        "ociVersion": "1.0.2",
        "annotations": spec_annotations(config),
        "process": {"terminal": False, "user": user, "args": args, "env": env,
                    "cwd": cc.get("WorkingDir") or "/",
                    "capabilities": {k: list(_CAPS) for k in
                                     ("bounding", "effective", "permitted")},
                    "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
                    "noNewPrivileges": True},
        "root": {"path": "rootfs", "readonly": True},
        "hostname": hostname,
        "mounts": mounts,
        "linux": {"namespaces": [{"type": t} for t in
                                 ("pid", "network", "ipc", "uts", "mount", "cgroup")],
                  "maskedPaths": ["/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                                  "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug",
                                  "/sys/firmware", "/proc/scsi"],
                  "readonlyPaths": ["/proc/asound", "/proc/bus", "/proc/fs", "/proc/irq",
                                    "/proc/sys", "/proc/sysrq-trigger"]},
    }


TEMP_PREFIX = ".tmp-bundle-"  # the work directory inside an empty PATH


class BundleOutput(ImageOutput):
    requires_ordered_layers = True  # layers are applied on top of each other as they come

    def __init__(self, uri: ResolvedURI, ctx: Context):
        path = local_path(uri)
        refuse_dangling_link(path)
        self.path = destination(path)  # a link to an empty directory is kept
        self.ctx = ctx
        self._work: TempDir | None = None
        self._temp: str | None = None  # the bundle, built inside _work
        self._tree: TreeWriter | None = None
        self._spec: dict[str, Any] | None = None
        self._image: Image | None = None
        self._inside = False  # PATH is an empty directory: built in it, not beside it

    def start(self, image: Image) -> None:
        image.refuse_non_tar("oci-bundle://")
        self._inside = os.path.isdir(self.path) and not os.path.islink(self.path)
        if self._inside:
            sweep(self.path, TEMP_PREFIX)  # what a killed run left
        if os.path.lexists(self.path) and not (self._inside and not os.listdir(self.path)):
            raise OutputExistsError(f"{self.path} exists; a bundle is written to a new "
                                    f"or empty directory")
        parent = os.path.dirname(self.path)
        if not os.path.isdir(parent):
            raise URIError(f"directory {parent} does not exist")
        if self._inside:
            self._work = TempDir(self.path, TEMP_PREFIX)
        else:
            prefix = f".{os.path.basename(self.path)}.tmp-"
            sweep(parent, prefix)  # what a killed run left
            self._work = TempDir(parent, prefix)
        self._temp = os.path.join(self._work.path, "bundle")
        os.mkdir(self._temp, PRIVATE)
        os.mkdir(os.path.join(self._temp, "rootfs"), 0o755)
        self._tree = TreeWriter(os.path.join(self._temp, "rootfs"))

    def add_layer(self, data: LayerData) -> None:
        assert self._tree is not None
        with data.open_tar() as tar:
            self._tree.apply(tar, f"layer {data.layer.index}")

    def finish(self, image: Image) -> OutputResult:
        assert self._tree is not None and self._temp is not None
        self._tree.close()
        self._image = image
        self._spec = self._derive_spec(image)
        write_atomic(os.path.join(self._temp, "config.json"),
                     json.dumps(self._spec, indent=2).encode())
        if self._inside:  # config.json last: a bundle that has it is whole
            for name in ("rootfs", "config.json"):
                os.rename(os.path.join(self._temp, name), os.path.join(self.path, name))
        else:
            os.rename(self._temp, self.path)
        self.abort()  # the now empty work directory
        self._tree.root = os.path.join(self.path, "rootfs")
        return OutputResult(location=self.path,
                            details={"args": self._spec["process"]["args"]})

    def _derive_spec(self, image: Image) -> dict[str, Any]:
        assert self._tree is not None
        config = image.config_json
        name = (config.get("config") or {}).get("User") or ""
        passwd = self._tree.read_file("etc/passwd")
        user = resolve_user(name, passwd, self._tree.read_file("etc/group"))
        return runtime_spec(config, user, hostname="occystrap", home=user_home(name, passwd))

    def verify(self) -> list[str]:
        """Re-read config.json and the rootfs; compare with the image and its layers."""
        if self._tree is None or self._image is None:
            return ["nothing was written"]
        problems = []
        with open(os.path.join(self.path, "config.json"), "rb") as f:
            if json.load(f) != self._derive_spec(self._image):
                problems.append("config.json does not match the image config")
        return problems + [f"rootfs {p}" for p in self._tree.verify()]

    def abort(self) -> None:
        if self._work is not None:
            self._work.remove()
            self._work = self._temp = None
