"""What a build root takes from the build host's Portage, read through Portage's API (never
by parsing its files): EPREFIX, the config dir, PKGDIR, DISTDIR, make.conf's values, the
profile, the repositories, and whether a repository has a given ebuild."""

from __future__ import annotations

import configparser
import io
import os
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from .roots import BuildRootError

# Values Portage puts into make.conf's layer itself; a root gets its own.
_COMPUTED = frozenset({"PORTAGE_ARCHLIST"})
# The root is never synced: the host syncs, the root sees the host's trees.
_SYNC_KEYS = ("sync-type", "sync-uri")

_ATOM = re.compile(r"^=([A-Za-z0-9+_][A-Za-z0-9+_.-]*)/([A-Za-z0-9+_][A-Za-z0-9+_.-]*)::"
                   r"([A-Za-z0-9_][A-Za-z0-9_-]*)$")


def eprefix() -> str:
    """The host Portage's EPREFIX ("" on Gentoo, the build prefix in the sandbox)."""
    import portage.const  # noqa: PLC0415 - heavy; and it reads PORTAGE_OVERRIDE_EPREFIX

    return portage.const.EPREFIX


def exact_atoms(argv: list[str]) -> list[tuple[str, str, str]]:
    """(category, PF, repository) of every `=CAT/PF::REPO` argument."""
    return [m.groups() for m in map(_ATOM.match, argv) if m]


@dataclass
class HostPortage:
    """The host's Portage configuration, loaded once (importing portage takes ~0.3 s)."""

    @cached_property
    def settings(self):
        import portage  # noqa: PLC0415

        try:
            settings = portage.settings
            settings["PKGDIR"]  # the lazy proxy loads here: fail now, in one line
            return settings
        except Exception as e:  # noqa: BLE001 - Portage raises anything on a broken config
            raise BuildRootError(f"cannot read the build host's Portage configuration "
                                 f"(EPREFIX {portage.const.EPREFIX or '/'}): "
                                 f"{type(e).__name__}: {e}") from None

    @property
    def eprefix(self) -> str:
        return self.settings["EPREFIX"]

    @property
    def config_dir(self) -> Path:
        return Path(self.settings["PORTAGE_CONFIGROOT"]) / "etc/portage"

    @property
    def pkgdir(self) -> Path:
        return Path(self.settings["PKGDIR"])

    @property
    def distdir(self) -> Path:
        return Path(self.settings["DISTDIR"])

    @property
    def profile(self) -> Path:
        """The config dir's make.profile (a symlink on most hosts, a folder on some)."""
        return Path(self.settings.profile_path)

    @property
    def global_config(self) -> Path:
        """Portage's own make.globals folder (EPREFIX/usr/share/portage/config, or the
        module installation's share/portage/config)."""
        return Path(self.settings.global_config_path)

    def make_conf(self) -> dict[str, str]:
        """make.conf's variables as Portage read them (sourced files and expansions done),
        without the environment's or the profile's."""
        conf = self.settings.configdict["conf"]
        return {k: v for k, v in conf.items() if k not in _COMPUTED}

    def repositories(self) -> dict[str, Path]:
        return {repo.name: Path(repo.location) for repo in self.settings.repositories}

    def repos_conf(self) -> str:
        """repos.conf as Portage resolved it, with syncing turned off."""
        parser = configparser.ConfigParser(interpolation=None)
        parser.read_string(self.settings.repositories.config_string())
        for section in [parser.default_section, *parser.sections()]:
            values = parser[section]
            for key in _SYNC_KEYS:
                values.pop(key, None)
            values["auto-sync"] = "no"
        out = io.StringIO()
        parser.write(out)
        return "# Written by cq-build-root from the build host's repositories\n" + out.getvalue()

    def has_ebuild(self, category: str, pf: str, repo: str) -> bool:
        """Whether repository `repo` of the host has CATEGORY/PF's ebuild."""
        import portage  # noqa: PLC0415

        if repo not in {r.name for r in self.settings.repositories}:
            return False
        porttree = portage.db[portage.root]["porttree"].dbapi
        path, _ = porttree.findname2(f"{category}/{pf}", myrepo=repo)
        return bool(path) and os.path.isfile(path)
