"""Why an install failed, in one line, from its log (emerge's own output).

A binary package that Portage refuses (a GnuPG signature that does not verify: unsigned,
unknown or untrusted key; contents that differ from the signed Manifest: tampered with)
ends emerge with "!!! Error extracting 'FILE', REASON" or "!!! Invalid binary package:
'FILE', REASON", after ">>> Failed to emerge CPV"; for GnuPG, Portage's " Summary:" says
which of the cases it was. Nothing of that package is merged: Portage checks before it
extracts the image.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

_REFUSED = re.compile(r"^!!! (?:Error extracting|Invalid binary package:) '(?P<file>[^']+)', "
                      r"(?P<reason>.+)$")
_FAILED = re.compile(r"^>>> Failed to emerge (?P<cpv>\S+?)(?:::\S+)?,")
# emerge starting a package ("binary " when it merges a binary package, none for a build),
# named as emerge names it (cpv::repo)
EMERGING = re.compile(r"^>>> Emerging (?P<binary>binary )?\(\d+ of \d+\) "
                      r"(?P<named>(?P<cpv>\S+?)(?:::\S+)?)$")
_TAIL = 256 * 1024  # the end of a log says why; a huge log is not read whole


@dataclass(frozen=True)
class InstallFailure:
    cpv: str | None  # the package emerge was merging, when the log says
    reason: str  # one line

    def __str__(self) -> str:
        return f"{self.cpv}: {self.reason}" if self.cpv else self.reason


def install_failure(log_file: Path) -> InstallFailure | None:
    """The package Portage refused and why, None when the install failed otherwise."""
    try:
        with open(log_file, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - _TAIL))
            text = f.read().decode(errors="replace")
    except OSError:
        return None
    lines = [line.strip() for line in text.splitlines()]
    named = [m["cpv"] for line in lines if (m := _FAILED.match(line) or EMERGING.match(line))]
    cpv = named[-1] if named else None  # the last package emerge named
    for at in range(len(lines) - 1, -1, -1):
        refused = _REFUSED.match(lines[at])
        if refused:
            reason = refused.group("reason").replace(f" in {refused.group('file')}", "")
            if "GnuPG" in reason:
                summary = _gpg_summary(lines[:at])
                reason = f"{reason}: {summary}" if summary else reason
            return InstallFailure(cpv, f"refused: {reason}")
    return None


def _gpg_summary(lines: list[str]) -> str:
    """Portage's summary of a failed GnuPG check ("binpkg signed with at least one
    unknown key."), or "" when it gave none."""
    for at in range(len(lines) - 1, -1, -1):
        if lines[at].lstrip("* ").startswith("Summary:"):
            following = [line.lstrip("* \t") for line in lines[at + 1:at + 3]]
            said = next((line for line in following if line), "")
            return "" if said.startswith("(none") else said.rstrip(".")
    return ""
