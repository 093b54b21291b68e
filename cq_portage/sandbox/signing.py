"""Signed gpkg for tests, benchmarks and the demo: a throwaway GnuPG key on the build host
(FEATURES=binpkg-signing) and clients that trust it the way getuto sets up
/etc/portage/gnupg (FEATURES=binpkg-request-signature).

    key = SigningKey.create(root / "build-gnupg")
    key.sign_on(build)                   # make.conf: binpkg-signing, BINPKG_GPG_SIGNING_*
    trust(client, key.public())          # client's etc/portage/gnupg, as getuto makes it
    ...
    stop_agent(key.home); stop_agent(client_gnupg_home(client))

What works here: a key without passphrase (the agent never asks, so Portage's unlock at the
start of emerge passes without a tty); Portage's default signing command (flock on
/run/lock, gpg --sign --armor) unchanged. Portage accepts a signature only when gpg reports
TRUST_FULLY or TRUST_ULTIMATE, so, as getuto does, the client keyring gets a local key of
ultimate trust that lsigns the build host's key (full validity), instead of marking the
build host's key itself ultimately trusted. Each GnuPG home starts its own gpg-agent:
stop_agent() ends it (gpgconf --kill), else it outlives the test. gpg sees every home by a
short link (agent_home): the agent's sockets must fit in 107 bytes. Portage verifies as
GPG_VERIFY_USER_DROP (nobody); the sandbox verifies as root (see trust()).
"""

from __future__ import annotations

import hashlib
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .prefix import FEATURES, Prefix

GPG = "gpg"
BUILD_USER_ID = "cq-portage build host <build@cq-portage.invalid>"
LOCAL_USER_ID = "Local trust key of this host <trust@cq-portage.invalid>"


def agent_home(home: Path) -> Path:
    """`home` by a short path for gpg: without /run/user/UID (containers, CI) gpg-agent puts
    its sockets in the home itself, and a socket path is limited to 107 bytes, which deep
    test folders exceed ("failed to start agent"). The link's path is the one gpg sees,
    so sockets, the agent and Portage's signing (BINPKG_GPG_SIGNING_GPG_HOME) all use it."""
    home = Path(home).resolve()
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    home.chmod(0o700)
    link = Path(tempfile.gettempdir()) / \
        f"cq-gnupg-{hashlib.sha256(str(home).encode()).hexdigest()[:12]}"
    if not link.is_symlink():
        link.symlink_to(home)
    return link


def gpg(home: Path, *args: str, input: bytes | None = None) -> bytes:
    """gpg in `home`, non-interactive; raises with gpg's own message on failure."""
    done = subprocess.run([GPG, "--homedir", str(agent_home(home)), "--batch", "--no-tty",
                           "--pinentry-mode", "loopback", "--passphrase", "", *args],
                          input=input, capture_output=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"gpg {' '.join(args)} failed: {done.stderr.decode(errors='replace')}")
    return done.stdout


def new_key(home: Path, user_id: str) -> str:
    """A new ed25519 signing key without passphrase in `home`; its fingerprint."""
    gpg(home, "--quick-gen-key", user_id, "ed25519", "sign", "never")
    return fingerprint(home, user_id)


def fingerprint(home: Path, user_id: str) -> str:
    listing = gpg(home, "--with-colons", "--list-secret-keys", user_id).decode()
    return next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:"))


def stop_agent(home: Path) -> None:
    """End the gpg-agent (and any other daemon) of `home`, and its short link."""
    if Path(home).is_dir():
        link = agent_home(home)
        subprocess.run(["gpgconf", "--homedir", str(link), "--kill", "all"],
                       capture_output=True, timeout=30)
        link.unlink()


@dataclass
class SigningKey:
    """The build host's binpkg signing key."""

    home: Path
    fingerprint: str

    @classmethod
    def create(cls, home: Path, user_id: str = BUILD_USER_ID) -> "SigningKey":
        return cls(home, new_key(home, user_id))

    def public(self) -> bytes:
        """The armored public key: what the build host publishes for its clients."""
        return gpg(self.home, "--armor", "--export", self.fingerprint)

    def sign_on(self, build: Prefix) -> None:
        """The build host signs every gpkg it makes (its build roots copy its make.conf).
        Portage checks each gpkg it has just written against BINPKG_GPG_VERIFY_GPG_HOME,
        so the build host trusts its own key there too."""
        trust(build, self.public(), request_signature=False)
        build.write_make_conf(FEATURES=f"{build.make_conf.get('FEATURES', FEATURES)} "
                                       "binpkg-signing",
                              BINPKG_GPG_SIGNING_GPG_HOME=str(agent_home(self.home)),
                              BINPKG_GPG_SIGNING_KEY=self.fingerprint)


def client_gnupg_home(client: Prefix) -> Path:
    """Where the client's Portage looks for trusted binpkg keys (BINPKG_GPG_VERIFY_GPG_HOME's
    default /etc/portage/gnupg, under the prefix)."""
    return client.config_dir / "gnupg"


def trust(client: Prefix, public_key: bytes, request_signature: bool = True) -> Path:
    """Make `client` trust `public_key` for binpkgs, as getuto does for Gentoo's keys: a
    local ultimately trusted key lsigns the imported one. With `request_signature`,
    FEATURES=binpkg-request-signature: unsigned packages are refused too."""
    home = client_gnupg_home(client)
    if not (home / "pubring.kbx").is_file() or not _has_local_key(home):
        local = new_key(home, LOCAL_USER_ID)
        gpg(home, "--import-ownertrust", input=f"{local}:6:\n".encode())
    imported = gpg(home, "--import", "--status-fd", "1", input=public_key).decode()
    for line in imported.splitlines():
        if line.startswith("[GNUPG:] IMPORT_OK"):
            gpg(home, "--local-user", fingerprint(home, LOCAL_USER_ID), "--quick-lsign-key",
                line.split()[3])
    gpg(home, "--check-trustdb")
    # PORTAGE_TRUST_HELPER (getuto) would rebuild this keyring from Gentoo's keys; what it
    # does is done here, for this build host's key.
    # Portage verifies as GPG_VERIFY_USER_DROP (nobody), for whom getuto makes the keyring
    # readable; sandbox prefixes live in root-only test folders, so verify as root here.
    extra = {"BINPKG_GPG_VERIFY_GPG_HOME": str(home), "PORTAGE_TRUST_HELPER": "",
             "GPG_VERIFY_USER_DROP": "", "GPG_VERIFY_GROUP_DROP": ""}
    if request_signature:
        features = client.make_conf.get("FEATURES", FEATURES)
        if "binpkg-request-signature" not in features.split():
            extra["FEATURES"] = f"{features} binpkg-request-signature"
    client.write_make_conf(**extra)
    return home


def _has_local_key(home: Path) -> bool:
    try:
        fingerprint(home, LOCAL_USER_ID)
    except (RuntimeError, StopIteration):
        return False
    return True
