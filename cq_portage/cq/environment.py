"""A job's environment: the server's own, less a denylist, with the request's pairs on top."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

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
    _match: re.Pattern = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # One regular expression for all patterns: this runs for every variable of every job.
        pattern = "|".join(fnmatch.translate(p) for p in self.deny) or "(?!)"
        object.__setattr__(self, "_match", re.compile(pattern))

    def denied(self, name: str) -> bool:
        return self._match.match(name) is not None

    def check_request(self, pairs: Iterable[tuple[str, str]]) -> None:
        """Refuse, rather than silently drop, a request that sets a denied variable."""
        for name, _ in pairs:
            if self.denied(name):
                raise BadRequest(f"environment variable {name} is not allowed by the server")

    def filter(self, env: Mapping[str, str]) -> dict[str, str]:
        return {k: v for k, v in env.items() if not self.denied(k)}

    def effective(self, base: Mapping[str, str],
                  pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
        """`base` already filtered (see `filter`), with the request's pairs on top."""
        env = dict(base)
        env.update((k, v) for k, v in pairs if not self.denied(k))
        return env
