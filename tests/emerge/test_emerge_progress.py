"""The progress display's three modes (the real terminal is covered end to end in
test_emerge_update.py::test_terminal_shows_one_updating_display)."""

import io

from cq_portage.emerge.progress import Progress


def test_lines_mode_prints_each_change_once():
    out = io.StringIO()
    progress = Progress(out, "lines")
    for state in ("queued", "queued", "building", "installed"):
        progress.set("dev-libs/a-1", state)
    assert out.getvalue().splitlines() == [
        "cq-emerge: dev-libs/a-1: queued", "cq-emerge: dev-libs/a-1: building",
        "cq-emerge: dev-libs/a-1: installed"]


def test_quiet_mode_prints_nothing():
    out = io.StringIO()
    Progress(out, "quiet").set("dev-libs/a-1", "failed", "(job 3)")
    assert out.getvalue() == ""


def test_tty_block_is_redrawn_in_place_and_fits_the_window(monkeypatch):
    monkeypatch.setenv("LINES", "6")
    out = io.StringIO()
    progress = Progress(out, "tty")
    for i in range(10):
        progress.set(f"pkg{i}", "queued")
    progress.set("pkg9", "installed")
    last = out.getvalue().rsplit("\033[5F", 1)[1]  # back up over the 5 lines drawn before
    assert last.splitlines() == ["... and 6 more above\033[K", "[queued    ] pkg6\033[K",
                                 "[queued    ] pkg7\033[K", "[queued    ] pkg8\033[K",
                                 "[installed ] pkg9\033[K"]
