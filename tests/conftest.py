"""Real parts shared by every test: a munged with a generated key."""

from __future__ import annotations

import pytest

from cq_portage.sandbox.munge import Munged


@pytest.fixture(scope="session")
def munged(tmp_path_factory):
    daemon = Munged(tmp_path_factory.mktemp("munge"), threads=4).start()
    yield daemon
    daemon.stop()
