"""Helpers of the build-root tests: a sandbox build prefix as the "host", cq-build-root run
as a real process with the host's environment, and a minimal busybox chroot seed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from cq_portage.buildroot import mounts
from cq_portage.sandbox.prefix import Prefix, Sandbox

BUSYBOX = Path("/bin/busybox")  # busybox-static (Makefile: sysdeps)
CLI = [sys.executable, "-m", "cq_portage.buildroot.cli"]


@dataclass
class Host:
    """A build host: the sandbox's build prefix, whose EPREFIX the tool sees as the host's."""

    sandbox: Sandbox
    build: Prefix

    @property
    def roots(self) -> Path:
        """Where roots live with no configuration at all: EPREFIX/var/lib/cq-portage/roots."""
        return self.build.path / "var/lib/cq-portage/roots"

    @property
    def distdir(self) -> Path:
        return self.build.path / "var/cache/distfiles"

    def env(self, **extra: str) -> dict[str, str]:
        return self.build.env(**extra)

    def cli(self, *args: str, env: dict[str, str] | None = None, timeout: float = 120
            ) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*CLI, *args], env=self.env(**(env or {})), text=True,
                              capture_output=True, timeout=timeout)

    def popen(self, *args: str, env: dict[str, str] | None = None, **kw) -> subprocess.Popen:
        return subprocess.Popen([*CLI, *args], env=self.env(**(env or {})), text=True, **kw)

    def root_prefix(self, group: str) -> Prefix:
        """A group's prefix root read as a sandbox Prefix (installed(), built_against())."""
        return Prefix(name=group, path=self.roots / group, repository=self.sandbox.repository,
                      pkgdir=self.sandbox.pkgdir)


def make_busybox_seed(folder: Path) -> Path:
    """A minimal chroot: the static busybox and a symlink per applet, /usr/bin -> /bin."""
    assert BUSYBOX.is_file(), "busybox-static is missing: make sysdeps"
    assert subprocess.run(["ldd", str(BUSYBOX)], capture_output=True).returncode != 0, \
        f"{BUSYBOX} is not static: make sysdeps installs busybox-static"
    (folder / "bin").mkdir(parents=True)
    shutil.copy2(BUSYBOX, folder / "bin/busybox")
    applets = subprocess.run([str(BUSYBOX), "--list"], capture_output=True, text=True,
                             check=True).stdout.split()
    for applet in applets:
        if applet != "busybox":
            (folder / "bin" / applet).symlink_to("busybox")
    (folder / "usr").mkdir()
    (folder / "usr/bin").symlink_to("../bin")
    (folder / "sbin").symlink_to("bin")
    (folder / "etc").mkdir()
    (folder / "etc/os-release").write_text("ID=busybox-test\n")
    return folder


def one_line(stderr: str) -> str:
    """The error output, asserted to be exactly one line."""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line, got:\n{stderr}"
    assert "Traceback" not in stderr
    return lines[0]


def wait_for(predicate, timeout: float, what: str) -> float:
    """Poll until predicate() is true; returns the seconds it took."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.05)
    return time.monotonic() - start


def leftover_mounts(root: Path) -> dict[int, list[str]]:
    """Mounts at or below `root` in any process's namespace, plus this one's."""
    found = mounts.mounted_anywhere(root)
    mine = mounts.below(mounts.mount_points(), root)
    if mine:
        found[os.getpid()] = mine
    return found
