"""A job's environment: the server's own, less a denylist, with the request's pairs on top."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from .wire import BadRequest

# Variables that change how programs load code or start shells: a job must not inherit them
# from the server, and a requester must not set them.
DEFAULT_DENY = (
    "LD_*", "DYLD_*", "BASH_ENV", "ENV", "SHELLOPTS", "BASHOPTS", "PS4", "IFS", "CDPATH",
    "GLOBIGNORE", "PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONINSPECT",
    "PERL5LIB", "PERL5OPT", "PERLLIB", "RUBYLIB", "RUBYOPT", "NODE_OPTIONS", "NODE_PATH",
    "GCONV_PATH", "HOSTALIASES", "LOCALDOMAIN", "RES_OPTIONS", "MALLOC_*", "GLIBC_TUNABLES",
    "TMPPREFIX", "NLSPATH", "LOCPATH",
)


@dataclass(frozen=True)
class EnvPolicy:
    deny: tuple[str, ...] = DEFAULT_DENY

    def denied(self, name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in self.deny)

    def check_request(self, pairs: Iterable[tuple[str, str]]) -> None:
        """Refuse, rather than silently drop, a request that sets a denied variable."""
        for name, _ in pairs:
            if self.denied(name):
                raise BadRequest(f"environment variable {name} is not allowed by the server")

    def effective(self, server_env: Mapping[str, str],
                  pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
        env = {k: v for k, v in server_env.items() if not self.denied(k)}
        env.update((k, v) for k, v in pairs if not self.denied(k))
        return env
