"""Real parts shared by every test: a munged with a generated key, cq-server processes."""

from __future__ import annotations

import pytest

from cq_portage.cq.auth import Munge
from cq_portage.sandbox.munge import Munged
from cq_portage.sandbox.server import CqServer
from cq_portage.sandbox.sshd import Sshd


@pytest.fixture(scope="session")
def munged(tmp_path_factory):
    daemon = Munged(tmp_path_factory.mktemp("munge"), threads=4).start()
    yield daemon
    daemon.stop()


@pytest.fixture
def make_server(tmp_path, munged):
    """Start cq-server processes; all are stopped after the test."""
    started = []

    def make(config: dict | None = None, folder: str = "server", munge_socket=None,
             **kw) -> CqServer:
        server = CqServer(tmp_path / folder, munge_socket or munged.socket, config or {},
                          **kw).start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.kill()


@pytest.fixture
def server(make_server):
    return make_server()


@pytest.fixture
def client(server):
    with server.client() as c:
        yield c


@pytest.fixture
def munge(munged):
    return Munge(munged.socket)


@pytest.fixture
def open_dir():
    """A folder any user can write to (pytest's own tmp folders are root-only)."""
    import shutil
    import tempfile
    from pathlib import Path

    folder = Path(tempfile.mkdtemp(prefix="cq-open-"))
    folder.chmod(0o777)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def own_sshd(tmp_path):
    """An sshd on 127.0.0.1 of the test's own, for tests that stop or freeze it."""
    server = Sshd(tmp_path / "sshd").start()
    yield server
    server.thaw()
    server.stop()
