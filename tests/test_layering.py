"""The house's layout, read from the source: which part may import which, and no circles.

Every import counts, also those inside functions and under TYPE_CHECKING: a lazy import is
still a dependency, and a circle hidden behind one is still a circle.
"""

from __future__ import annotations

import ast
import graphlib
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "cq_portage"


def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """The cq_portage modules `name` imports (a package's own __init__ is left out: they
    are empty, and every submodule import would otherwise pass through them)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for target in targets:
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target and MODULES[target].name != "__init__.py" and target != name:
                found.add(target)
    return found


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _part(module: str) -> str:
    return module.split(".")[1] if module.count(".") else ""


def test_the_graph_is_read():
    """The reader finds what is plainly there (else the tests below pass on nothing)."""
    assert "cq_portage.cq.client" in GRAPH["cq_portage.cq.client_cli"]
    assert "cq_portage.cq.cq_pb2" in GRAPH["cq_portage.cq.wire"]  # `from . import cq_pb2`
    assert "cq_portage.emerge.plan" in GRAPH["cq_portage.emerge.jobs"]
    assert len(GRAPH) > 60


def _imports_into(part: str, forbidden: tuple[str, ...], allowed: str = "") -> str:
    """Each import from a module of `part` into a `forbidden` part (but `allowed`), a line."""
    return "\n".join(sorted(f"{module} imports {target}" for module, targets in GRAPH.items()
                            if _part(module) == part for target in targets
                            if _part(target) in forbidden and target != allowed))


def test_emerge_reaches_the_queue_only_through_cq_client():
    wrong = _imports_into("emerge", ("cq",), allowed="cq_portage.cq.client")
    assert not wrong, wrong


def test_the_queue_knows_nothing_of_emerge_or_build_roots():
    wrong = _imports_into("cq", ("emerge", "buildroot", "sandbox"))
    assert not wrong, wrong


def test_build_roots_import_neither_side():
    wrong = _imports_into("buildroot", ("emerge", "cq", "sandbox"))
    assert not wrong, wrong


def test_shared_modules_import_neither_half():
    """yamlfile, sshconfig and ssh sit below both halves (demo.py, beside them, runs the
    sandbox: it is no shared module)."""
    wrong = "\n".join(_imports_into(shared, ("cq", "emerge", "buildroot", "sandbox"))
                      for shared in ("yamlfile", "sshconfig", "ssh")).strip()
    assert not wrong, wrong


def _circle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of `graph` (the modules along it), or None."""
    try:
        tuple(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as error:
        return error.args[1]
    return None


def test_the_circle_finder_finds_circles():
    assert set(_circle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}})) == {"a", "b", "c"}
    assert _circle({"a": {"b"}, "b": set()}) is None


def test_no_import_circles():
    assert _circle(GRAPH) is None


def test_architecture_md_lists_every_module_and_no_other():
    text = (ROOT.parent / "ARCHITECTURE.md").read_text().split("## Modules, one line each")[1]
    listed = set(re.findall(r"`((?:cq|emerge|buildroot|sandbox)/\w+|yamlfile|sshconfig|ssh|demo)`",
                            text))
    existing = {name.removeprefix("cq_portage.").replace(".", "/")
                for name, path in MODULES.items() if path.name != "__init__.py"}
    assert listed == existing, (f"not in ARCHITECTURE.md: {sorted(existing - listed)}; "
                                f"listed but gone: {sorted(listed - existing)}")


def _loaded(code: str) -> set[str]:
    """The modules a fresh interpreter has loaded after running `code`."""
    done = subprocess.run([sys.executable, "-c", code + "\nimport sys\nprint(*sys.modules)"],
                          capture_output=True, text=True, timeout=120, check=True,
                          cwd=ROOT.parent)
    return set(done.stdout.split())


def test_cq_client_starts_without_dataclasses():
    """Scripts start cq-client once a job: dataclasses (inspect, ast, dis) costs each ~7 ms."""
    assert "dataclasses" not in _loaded("import cq_portage.cq.client_cli")


def test_cq_emerge_outside_fleet_mode_does_not_load_paramiko():
    """Also with a config whose groups list hosts (a site shares one config): only fleet
    mode, which reaches them, pays for paramiko."""
    loaded = _loaded(
        "import pathlib, cq_portage.emerge.cli, cq_portage.emerge.local\n"
        "from cq_portage.emerge.profile_yaml import parse_config\n"
        "parse_config('server: {host: b}\\ngroups:\\n  web: {hosts: [ssh://root@w1]}\\n',"
        " pathlib.Path('c.yaml')).groups['web'].hosts[0].host")
    assert "cq_portage.emerge.profile_yaml" in loaded and "paramiko" not in loaded
