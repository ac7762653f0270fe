"""Checking the proxy's own clients against an htpasswd file (bcrypt entries, as the
CNCF registry takes them)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import threading

import bcrypt

from occystrap_core.errors import UsageError

# $2a$, $2b$ or $2y$, a cost of 04-31, 22 characters of salt and 31 of hash
_BCRYPT = re.compile(r"\$2[aby]\$(?:0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}")


class Authenticator:
    """HTTP Basic against ``user:bcrypt-hash`` lines. A password that checked out is
    remembered (by its hash) for the proxy's lifetime: bcrypt is slow on purpose."""

    realm = "occystrap proxy"

    def __init__(self, path: str):
        self.users: dict[str, bytes] = {}
        with open(path, "rb") as f:
            for number, raw in enumerate(f, 1):
                try:
                    line = raw.decode("utf-8").strip()
                except UnicodeDecodeError:
                    raise UsageError(f"{path}, line {number}: not UTF-8 text") from None
                if not line or line.startswith("#"):
                    continue
                user, sep, hashed = line.partition(":")
                # checked now: bcrypt refuses a malformed hash only when a client logs in
                if not sep or not _BCRYPT.fullmatch(hashed):
                    raise UsageError(f"{path}, line {number}: expected USER:BCRYPT-HASH "
                                     f"(htpasswd -B)")
                self.users[user] = hashed.encode()
        if not self.users:
            raise UsageError(f"{path} lists no user")
        self._good: set[str] = set()
        self._lock = threading.Lock()

    def check(self, header: str | None) -> bool:
        """Whether an ``Authorization`` header names a user with the right password."""
        scheme, _, value = (header or "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, sep, password = base64.b64decode(value.strip(), validate=True).decode(
                "utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        hashed = self.users.get(user)
        if not sep or hashed is None:
            return False
        key = hashlib.sha256(f"{user}\0{password}".encode()).hexdigest()
        with self._lock:
            if key in self._good:
                return True
        if not bcrypt.checkpw(password.encode(), hashed.replace(b"$2y$", b"$2b$", 1)):
            return False
        with self._lock:
            self._good.add(key)
        return True
