"""A sandbox shared by the emerge tests: one repository, a client prefix with an old state
installed by real emerge, a build prefix that made binary packages with real emerge.

Tests that build or install more use packages of their own, so they do not couple.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from cq_portage.sandbox.prefix import Prefix, Sandbox
from cq_portage.sandbox.repository import MULTILIB_IUSE, Ebuild

# The state the client prefix is installed from ...
OLD = [
    Ebuild("app-misc/bump-1.0"),
    Ebuild("app-misc/newflag-1.0", iuse=("a",)),
    Ebuild("app-misc/dropflag-1.0", iuse=("+x", "y")),
    Ebuild("app-misc/useflags-1.0", iuse=("ssl", "+http2", "X")),
    Ebuild("dev-libs/multi-1.0", iuse=MULTILIB_IUSE),
    Ebuild("dev-lang/slotted-2.7", slot="2.7"),
    Ebuild("app-misc/optdep-1.0", iuse=("extra",), rdepend="extra? ( dev-libs/extradep )"),
    Ebuild("app-misc/oldname-1.0"),
    Ebuild("app-misc/stable-1.0", iuse=("foo",)),
    Ebuild("app-misc/iusechange-1.0", iuse=("a",)),
]
INSTALLED = ["app-misc/bump", "app-misc/newflag", "app-misc/dropflag", "app-misc/useflags",
             "dev-libs/multi", "dev-lang/slotted", "app-misc/optdep", "app-misc/oldname",
             "app-misc/stable"]
WORLD = ["app-misc/bump", "app-misc/newflag", "app-misc/dropflag", "app-misc/useflags",
         "dev-libs/multi", "dev-lang/slotted:2.7", "dev-lang/slotted:3", "app-misc/optdep",
         "app-misc/newname", "app-misc/stable"]
# ... and what the repository became afterwards (a sync).
NEW = [
    Ebuild("app-misc/bump-2.0"),
    Ebuild("app-misc/newflag-1.0", iuse=("a", "+b")),
    Ebuild("app-misc/dropflag-1.0", iuse=("y",)),
    Ebuild("dev-lang/slotted-2.7.1", slot="2.7"),
    Ebuild("dev-lang/slotted-3.11", slot="3"),
    Ebuild("app-misc/newname-1.0", rdepend="!app-misc/oldname"),
    Ebuild("dev-libs/extradep-1.0", iuse=MULTILIB_IUSE),
    Ebuild("app-misc/binmatch-1.0", iuse=("ssl", "X")),
    Ebuild("app-misc/twoinst-1.0", iuse=("gui",) + MULTILIB_IUSE),
    Ebuild("app-misc/pkguse-1.0", iuse=("sqlite", "ssl")),
    Ebuild("app-misc/conflict-1.0", rdepend="!app-misc/stable"),
    Ebuild("app-misc/masked-1.0"),
    Ebuild("dev-libs/lib-1.0"),
    Ebuild("dev-libs/lib-2.0"),
    Ebuild("app-misc/needs-lib1-1.0", rdepend="=dev-libs/lib-1*"),
    Ebuild("app-misc/needs-lib2-1.0", rdepend="=dev-libs/lib-2*"),
    Ebuild("app-misc/e2e-1.0", iuse=("ssl", "+http2") + MULTILIB_IUSE,
           rdepend="ssl? ( dev-libs/e2edep )"),
    Ebuild("dev-libs/e2edep-1.0", iuse=MULTILIB_IUSE),
    Ebuild("app-misc/pinned-1.0", iuse=("ssl", "+http2", "X") + MULTILIB_IUSE),
    Ebuild("app-misc/iusechange-1.0", iuse=("a", "b")),  # same USE for "a", new IUSE
]
# Binary instances the build host made from the old state, then from the new: (atom, USE,
# ABI_X86).
BUILT_OLD = [("=app-misc/iusechange-1.0", "a", "64")]
BUILT = [("=app-misc/binmatch-1.0", "ssl", "64"),
         ("=app-misc/twoinst-1.0", "gui", "64"),
         ("=app-misc/twoinst-1.0", "-gui", "64 32")]


@dataclass
class World:
    sandbox: Sandbox
    client: Prefix
    build: Prefix


@pytest.fixture(scope="session")
def world(tmp_path_factory) -> World:
    sandbox = Sandbox(tmp_path_factory.mktemp("sandbox")).create()
    sandbox.repository.add(*OLD)
    client = sandbox.add_prefix("client")
    build = sandbox.add_prefix("build")
    client.emerge("--oneshot", *INSTALLED)
    for atom, use, abi in BUILT_OLD:
        build.emerge("--buildpkgonly", "--oneshot", atom, env={"USE": use, "ABI_X86": abi})
    sandbox.repository.add(*NEW)
    sandbox.repository.mask("app-misc/masked")
    client.write_world(*WORLD)
    for atom, use, abi in BUILT:
        build.emerge("--buildpkgonly", "--oneshot", atom, env={"USE": use, "ABI_X86": abi})
    return World(sandbox=sandbox, client=client, build=build)
