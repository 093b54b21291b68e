"""Helpers of the emerge tests: run cq-emerge and real emerge in a prefix, parse emerge."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from cq_portage.sandbox.prefix import Prefix


def write_config(folder: Path, groups: dict, name: str = "cq-portage.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump({"server": {"host": "localhost", "port": 48005},
                                    "groups": groups}, sort_keys=False))
    return path


def cq_emerge(prefix: Prefix, *args: str, env: dict | None = None
              ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cq_portage.emerge.cli", *args],
                          env=prefix.env(**(env or {})), text=True, capture_output=True,
                          timeout=300)


def cq_plans(prefix: Prefix, config: Path, *groups: str, env: dict | None = None,
             options: tuple[str, ...] = ()) -> dict:
    args = [a for g in groups for a in ("--group", g)]
    done = cq_emerge(prefix, "--config", str(config), "--pretend", "--json", *options, *args,
                     env=env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@dataclass(frozen=True)
class EmergeLine:
    kind: str  # ebuild, binary
    cpv: str
    use: frozenset[str]
    build_id: int | None = None  # of a binary instance


_LINE = re.compile(r"^\[(ebuild|binary)\s+[^\]]*\]\s+(\S+)\s*(.*)$")
_VAR = re.compile(r'([A-Z0-9_]+)="([^"]*)"')


def parse_emerge(output: str) -> list[EmergeLine]:
    """The merge list of `emerge -pv --color=n`: cpv and enabled USE within IUSE, with
    USE_EXPAND values turned into flags the way Portage stores them (ABI_X86="32" ->
    abi_x86_32). Forced/masked flags "(x)" count by their sign; "*" and "%" are markers."""
    lines = []
    for line in output.splitlines():
        match = _LINE.match(line)
        if not match:
            continue
        kind, name, rest = match.groups()
        cpv = name.split("::")[0]
        if cpv.count(":"):  # cat/pkg-1.0:SLOT
            cpv = cpv.split(":")[0]
        build_id = None
        if kind == "binary":  # cat/pkg-1.0-BUILD_ID
            cpv, build_id = cpv.rsplit("-", 1)
            build_id = int(build_id)
        use = set()
        for var, flags in _VAR.findall(rest):
            for token in flags.split():
                token = token.strip("()").rstrip("*%")
                if token.startswith("-"):
                    continue
                use.add(token if var == "USE" else f"{var.lower()}_{token}")
        lines.append(EmergeLine(kind=kind, cpv=cpv, use=frozenset(use), build_id=build_id))
    return lines


def real_emerge(prefix: Prefix, *args: str, env: dict | None = None,
                package_use: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    """Real `emerge -pv ARGS` with env exported; package_use lines go in a copy of the
    prefix's config root (PORTAGE_CONFIGROOT), never into the prefix itself."""
    env = dict(env or {})
    if package_use:
        root = prefix.path.parent / f"{prefix.name}-configroot-{abs(hash(tuple(package_use)))}"
        if not root.exists():
            shutil.copytree(prefix.config_dir, root / "etc/portage", symlinks=True)
            (root / "etc/portage/package.use").write_text("\n".join(package_use) + "\n")
        env["PORTAGE_CONFIGROOT"] = str(root)
    return prefix.emerge("--pretend", "--verbose", *args, env=env, check=False)


def emerge_plan(prefix: Prefix, targets: list[str], env: dict | None = None,
                package_use: list[str] | None = None, usepkg: bool = False
                ) -> list[EmergeLine]:
    args = ["--update", "--deep", "--newuse"]
    if usepkg:
        args += ["--usepkg", "--binpkg-respect-use=y"]
    done = real_emerge(prefix, *args, *targets, env=env, package_use=package_use)
    assert done.returncode == 0, done.stdout + done.stderr
    return parse_emerge(done.stdout)


def assert_one_problem(tmp_path: Path, text: str, line: int, message: str) -> None:
    """Loading `text` as a config file gives exactly one problem: FILE:LINE: ...message..."""
    from cq_portage.emerge.profile_yaml import load_config
    from cq_portage.yamlfile import ConfigError

    path = tmp_path / "cq-portage.yaml"
    path.write_text(text)
    try:
        load_config(path)
    except ConfigError as error:
        problems = error.problems
    else:
        raise AssertionError(f"no problem found in {text!r}")
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{path}:{line}: "), problems[0]
    assert message in problems[0] and "\n" not in problems[0]
