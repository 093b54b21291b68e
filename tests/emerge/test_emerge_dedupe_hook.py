"""cq-emerge-hook on a real cq-server: one build per package instance key."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from cq_portage.sandbox.server import hold_queue, wait_running


@pytest.fixture
def hooked(make_server):
    return make_server({"incoming_hook": [str(Path(sys.executable).parent / "cq-emerge-hook")]})


def test_same_instance_key_merges_whatever_the_command_line(hooked, tmp_path):
    with hooked.client() as client:
        hold_queue(client, 1)
        key = "dev-libs/foo-1::sandbox 6f1c0e"
        web = client.submit(["sh", "-c", f"echo built >> {tmp_path}/log"],
                            {"USE": "ssl http2", "FEATURES": "a"}, dedupe_key=key)
        db = client.submit(["sh", "-c", f"echo built >> {tmp_path}/log"],
                           {"FEATURES": "a", "USE": "http2 ssl"}, dedupe_key=key)
        other = client.submit(["sh", "-c", "exit 0"], dedupe_key="dev-libs/bar-1::sandbox 1")
        plain = [client.submit(["sh", "-c", "exit 0"]) for _ in range(2)]
        assert db.job_id == web.job_id and db.merged
        assert other.job_id != web.job_id
        assert plain[1].job_id == plain[0].job_id  # the server's own dedupe still applies
        assert client.wait(db.job_id).ok
    assert (tmp_path / "log").read_text() == "built\n"


def test_same_key_joins_the_running_build(hooked, tmp_path):
    with hooked.client() as client:
        key = "dev-libs/foo-1::sandbox 77"
        first = client.submit(["sh", "-c", f"echo built >> {tmp_path}/log; sleep 1; exit 4"],
                              dedupe_key=key)
        wait_running(client, first.job_id)
        second = client.submit(["sh", "-c", "exit 0"], {"X": "1"}, dedupe_key=key)
        assert second.job_id == first.job_id and second.merged
        assert client.wait(second.job_id).exit_status == 4
    assert (tmp_path / "log").read_text() == "built\n"
