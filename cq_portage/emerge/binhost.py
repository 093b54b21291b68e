"""Packages delivered over HTTP(S): the `binhost:` settings, what they export to Portage,
and what Portage says when a binhost cannot be reached.

Portage does all the binhost work itself (binrepos.conf or PORTAGE_BINHOST, FEATURES=getbinpkg,
its remote index cache, binpkg-request-signature): cq-emerge only turns the config keys into
the variables emerge reads, and recognises Portage's own failure message, so that planning
against an unreachable binhost is one line and never a silent "build everything".

Why installs drop the cached index (see install.py): Portage asks the binhost for its index
with If-Modified-Since set to the cached index's TIMESTAMP plus 5 seconds
(portage.util._urlopen.TIMESTAMP_TOLERANCE), and reads the body only when the remote
TIMESTAMP is a later second; a TTL in the index skips asking at all. An index rewritten
within 5 seconds of the cached one, which is exactly when a build that a client just planned
ends, is then answered 304 by servers that follow RFC 9110 (Python's http.server, Apache,
nginx with `if_modified_since before`), and the install finds no new instance. Without a
cached copy Portage asks unconditionally and reads it all.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

FAIL, BUILD = "fail", "build"
UNREACHABLE_CHOICES = (FAIL, BUILD)
# Variables an install script exports so emerge there sees the binhost as the plan did.
INSTALL_VARS = ("PORTAGE_BINHOST", "FEATURES", "BINPKG_GPG_VERIFY_GPG_HOME")
CACHE_PATH = "var/cache/edb/binhost"  # portage.const.CACHE_PATH + "/binhost", under EROOT

_FETCH_ERROR = re.compile(r"!!! \[(?P<name>[^\]]+)\] Error fetching binhost package info "
                          r"from '(?P<url>[^']*)'")
_DETAIL = re.compile(r"!!! \[(?P<name>[^\]]+)\] (?P<detail>.+)")
_NO_CONFIG = "binrepos.conf is missing (or PORTAGE_BINHOST is unset)"


@dataclass(frozen=True)
class BinhostSettings:
    """cq-portage.yaml's `binhost:`. url None: the host's own binrepos.conf and FEATURES
    decide (cq-emerge plans and installs exactly as its emerge would); signatures None:
    as Portage is configured, True: binpkg-request-signature for this run."""

    url: str | None = None
    signatures: bool | None = None
    unreachable: str = FAIL  # or BUILD: plan from the local PKGDIR only, saying so

    def environment(self, environ: Mapping[str, str]) -> dict[str, str]:
        """The variables to export (on top of `environ`) for planning and installing."""
        added: list[str] = []
        env: dict[str, str] = {}
        if self.url:
            env["PORTAGE_BINHOST"] = self.url
            added.append("getbinpkg")
        if self.signatures:
            added.append("binpkg-request-signature")
        if added:
            env["FEATURES"] = " ".join((environ.get("FEATURES", ""), *added)).strip()
        return env


class BinhostUnreachable(Exception):
    """Planning needs a binhost's index and could not get it; str() is the one line."""


def fetch_failures(portage_output: str) -> list[str]:
    """Portage's report of binhosts whose index could not be fetched, one line each:
    "binhost NAME (URL): WHY"; [] when every index was read."""
    lines = portage_output.splitlines()
    failures = []
    for at, line in enumerate(lines):
        found = _FETCH_ERROR.search(line)
        if found:
            detail = next((m.group("detail") for m in map(_DETAIL.search, lines[at + 1:at + 4])
                           if m and m.group("name") == found.group("name")), "no answer")
            failures.append(f"binhost {found.group('name')} ({found.group('url')}): {detail}")
        elif _NO_CONFIG in line:
            failures.append("FEATURES=getbinpkg but no binhost: add /etc/portage/binrepos.conf "
                            "or binhost.url in cq-portage.yaml")
    return failures


def cached_index(eroot: str | Path, url: str) -> Path:
    """Portage's copy of a binhost's Packages index on the host with this EROOT."""
    parsed = urlparse(url)
    return Path(eroot) / CACHE_PATH / (parsed.hostname or "") / parsed.path.lstrip("/") / \
        "Packages"
