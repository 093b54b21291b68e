"""MUNGE credentials (pymunge) and who may submit.

The original server ran requests whose credentials MUNGE reported as replayed or expired and
ignored the uid/gid; here a request runs only when decode succeeds outright.
"""

from __future__ import annotations

import grp
import os
import pwd
import threading
from typing import NamedTuple

import pymunge
from pymunge import MungeErrorCode as Code

_REASONS = {
    Code.EMUNGE_CRED_REPLAYED: "credential replayed",
    Code.EMUNGE_CRED_EXPIRED: "credential expired (check the clocks of both hosts)",
    Code.EMUNGE_CRED_REWOUND: "credential from the future (check the clocks of both hosts)",
    Code.EMUNGE_CRED_INVALID: "credential invalid (another MUNGE key, or tampered with)",
    Code.EMUNGE_BAD_CRED: "malformed credential",
    Code.EMUNGE_BAD_VERSION: "malformed credential (unknown version)",
    Code.EMUNGE_BAD_CIPHER: "credential uses an unknown cipher",
    Code.EMUNGE_BAD_MAC: "credential uses an unknown MAC",
    Code.EMUNGE_BAD_ZIP: "credential uses an unknown compression",
    Code.EMUNGE_BAD_REALM: "credential from another MUNGE realm",
    Code.EMUNGE_CRED_UNAUTHORIZED: "credential not meant for this server",
}
_OURS = {Code.EMUNGE_SOCKET, Code.EMUNGE_TIMEOUT, Code.EMUNGE_NO_MEMORY, Code.EMUNGE_SNAFU}


class AuthError(Exception):
    """The credential is refused; `server_side` when the fault is ours (munged down)."""

    def __init__(self, reason: str, server_side: bool = False):
        super().__init__(reason)
        self.server_side = server_side


class Credential(NamedTuple):  # not a dataclass: see wire.Limits
    payload: bytes
    uid: int
    gid: int


class Munge:
    """Encode and decode through one munged socket; safe to share between threads."""

    def __init__(self, socket: str | None = None):
        self.socket = socket
        self._local = threading.local()

    def _context(self) -> pymunge.MungeContext:
        ctx = getattr(self._local, "ctx", None)
        if ctx is None:
            ctx = pymunge.MungeContext()
            if self.socket:
                ctx.socket = self.socket
            self._local.ctx = ctx
        return ctx

    def encode(self, payload: bytes) -> bytes:
        try:
            return self._context().encode(payload)
        except pymunge.MungeError as e:
            raise AuthError(f"cannot create a MUNGE credential: {e.message}",
                            server_side=True) from None

    def decode(self, cred: bytes) -> Credential:
        try:
            payload, uid, gid = self._context().decode(cred)
        except pymunge.MungeError as e:
            if e.code in _OURS:
                raise AuthError(f"munged on the server failed: {e.message}", True) from None
            raise AuthError(_REASONS.get(e.code, f"credential refused: {e.message}")) from None
        return Credential(payload, uid, gid)


def _ids(names: list, lookup, what: str) -> set[int]:
    ids = set()
    for name in names:
        if isinstance(name, int) or str(name).isdigit():
            ids.add(int(name))
        else:
            try:
                ids.add(lookup(str(name)))
            except KeyError:
                raise ValueError(f"unknown {what} {name!r}") from None
    return ids


class Authorizer(NamedTuple):
    """Who may submit: listed uids, or members (by the server's user database) of listed gids."""

    uids: frozenset[int]
    gids: frozenset[int]

    @classmethod
    def from_names(cls, users: list, groups: list) -> "Authorizer":
        uids = _ids(users, lambda n: pwd.getpwnam(n).pw_uid, "user")
        gids = _ids(groups, lambda n: grp.getgrnam(n).gr_gid, "group")
        return cls(frozenset(uids), frozenset(gids))

    @classmethod
    def default(cls) -> "Authorizer":
        return cls(frozenset({0, os.getuid()}), frozenset())

    def check(self, uid: int, gid: int) -> None:
        if uid in self.uids or gid in self.gids:
            return
        if self.gids and self.gids & set(groups_of(uid, gid)):
            return
        raise AuthError(f"uid {uid} (gid {gid}) is not allowed to use this queue")


def groups_of(uid: int, gid: int) -> list[int]:
    try:
        return os.getgrouplist(pwd.getpwuid(uid).pw_name, gid)
    except KeyError:
        return [gid]
