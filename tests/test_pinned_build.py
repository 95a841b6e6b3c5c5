"""The pinned build: requirements/*.lock pin every dependency of pyproject.toml, and this environment holds them."""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
_PIN = re.compile(r"^([A-Za-z0-9._-]+)==([^\s;]+)(?:\s*;\s*(.+))?$")
# The libraries whose private parts the gateway patches or replaces (gateway/http/connguard.py,
# gateway/outbound.py): a new release may change them, so pyproject.toml caps each below the next minor release.
PATCHED = ("hypercorn", "httpx", "httpx2")


def pins(name: str) -> dict[str, tuple[str, Marker | None]]:
    """The lock file's pins: name -> (version, marker)."""
    found: dict[str, tuple[str, Marker | None]] = {}
    for line in (ROOT / "requirements" / f"{name}.lock").read_text().splitlines():
        match = _PIN.match(line)
        if match:
            marker = Marker(match[3]) if match[3] else None
            found[canonicalize_name(match[1])] = (match[2], marker)
    return found


def requirements(*, dev: bool) -> list[Requirement]:
    reqs = [Requirement(r) for r in PYPROJECT["project"]["dependencies"] + PYPROJECT["build-system"]["requires"]]
    if dev:
        reqs += [Requirement(r) for r in PYPROJECT["project"]["optional-dependencies"]["dev"]]
    return reqs


def test_each_lock_pins_every_requirement_of_pyproject_within_its_range() -> None:
    for lock, dev in (("run", False), ("dev", True)):
        pinned = pins(lock)
        for req in requirements(dev=dev):
            name = canonicalize_name(req.name)
            assert name in pinned, f"{name} is not in requirements/{lock}.lock: run scripts/lock"
            assert req.specifier.contains(pinned[name][0], prereleases=True), (
                f"requirements/{lock}.lock pins {name}=={pinned[name][0]}, outside {req}: run scripts/lock"
            )


def test_the_run_lock_is_the_dev_lock_less_the_dev_tools() -> None:
    # What scripts/serve and the zipapp run is what CI tested: the same version of every shared package.
    dev = pins("dev")
    for name, (version, _) in pins("run").items():
        assert dev.get(name, ("missing",))[0] == version, name


def test_the_patched_libraries_have_an_upper_bound_the_lock_respects() -> None:
    declared: dict[str, Requirement] = {canonicalize_name(r.name): r for r in requirements(dev=False)}
    pinned = pins("run")
    for name in PATCHED:
        spec = declared[name].specifier
        assert any(s.operator == "<" for s in spec), f"{name} needs an upper bound in pyproject.toml"
        assert spec.contains(pinned[name][0])


def test_this_environment_holds_the_locked_versions() -> None:
    # scripts/test installed requirements/dev.lock: CI runs exactly these (a stale .venv reinstalls on its own,
    # since the stamp hashes the lock).
    wrong = {}
    for name, (version, marker) in pins("dev").items():
        if marker is not None and not marker.evaluate():
            continue
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            installed = "missing"
        if installed != version:
            wrong[name] = (version, installed)
    assert not wrong, f"locked vs installed: {wrong}"


def test_the_editable_install_builds_without_a_setuptools_warning(tmp_path: Path) -> None:
    # What scripts/serve runs (`pip install -e .`, no build isolation) printed ~20 lines of setuptools warnings on
    # its first run (`license = { text = ... }`, the editable mode): each warning is an error here (issue 15 item 19).
    build = "import sys; from setuptools import build_meta; build_meta.build_editable(sys.argv[1])"
    r = subprocess.run(
        [sys.executable, "-W", "error", "-c", build, str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    assert "arning" not in r.stderr, r.stderr
