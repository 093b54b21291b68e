"""The sandbox itself: the generated metadata cache is what Portage uses, and a package
recorded with write_vdb_entry (the benchmark's shortcut) is installed as far as real emerge
can tell."""

from __future__ import annotations

from cq_portage.sandbox.prefix import Sandbox, write_vdb_entry
from cq_portage.sandbox.repository import Ebuild


def test_generated_cache_is_used_and_vdb_entries_count_as_installed(tmp_path):
    sandbox = Sandbox(tmp_path / "sb").create()
    old = Ebuild("app-misc/one-1.0", iuse=("+a", "b"))
    sandbox.repository.add(old, Ebuild("app-misc/two-1.0", rdepend="app-misc/one"))
    prefix = sandbox.add_prefix("p")
    write_vdb_entry(prefix, old, {"a"}, counter=1)
    prefix.write_world("app-misc/two")

    done = prefix.emerge("--pretend", "--update", "--deep", "--newuse", "--verbose", "@world")
    assert "app-misc/two-1.0" in done.stdout
    assert "app-misc/one" not in done.stdout  # installed, same USE: nothing to do
    assert not list((prefix.path / "var/cache/edb/dep").rglob("*-1.0"))  # nothing sourced

    done = prefix.emerge("--pretend", "--update", "--deep", "--newuse", "--verbose", "@world",
                         env={"USE": "b"})
    assert "app-misc/one-1.0" in done.stdout  # USE change seen against the recorded USE
    assert prefix.installed()["app-misc/one-1.0"].use == frozenset({"a"})
