"""A sandbox build prefix as the build host, shared by the build-root tests; each test uses
groups of its own, so they do not couple."""

from __future__ import annotations

import pytest
from buildroot_helpers import Host, make_busybox_seed

from cq_portage.sandbox.prefix import Sandbox
from cq_portage.sandbox.repository import Ebuild

# A library whose USE a consumer's build depends on, and a build tool (BDEPEND).
REPO = [
    Ebuild("dev-libs/brlib-1", iuse=("foo",)),
    Ebuild("dev-util/brtool-1"),
    Ebuild("app-misc/brapp-1", iuse=("foo",), depend="dev-libs/brlib[foo?]",
           rdepend="dev-libs/brlib", bdepend="dev-util/brtool",
           records=("dev-libs/brlib", "dev-util/brtool")),
    Ebuild("app-misc/hostpkg-1"),
]


@pytest.fixture(scope="session")
def host(tmp_path_factory) -> Host:
    sandbox = Sandbox(tmp_path_factory.mktemp("buildroot")).create()
    sandbox.repository.add(*REPO)
    build = sandbox.add_prefix("build")
    build.emerge("--oneshot", "app-misc/hostpkg")  # the host's own installed system
    return Host(sandbox=sandbox, build=build)


@pytest.fixture(scope="session")
def busybox_seed(tmp_path_factory):
    return make_busybox_seed(tmp_path_factory.mktemp("seed") / "busybox")
