"""The zipapp's `__main__.py` (scripts/build-zipapp puts it beside shiv's archive): a warm start goes straight in.

The zipapp holds two files: this one and shiv's own archive, stored whole as `payload.pyz`. Python reads the whole
table of contents of the archive it runs before it runs `__main__.py` (zipimport, in pure Python): shiv's archive
lists ~2,400 files, 14 ms of CPU per start on the benchmark machine, where two entries cost next to nothing.
shiv's bootstrap (`_bootstrap`, in the payload) would then import compileall, hashlib, shutil, subprocess, zipfile,
site and pathlib and read that table a second time, about 50 ms more, only to find the packages it extracted on the
first start. So a warm start does what shiv does on such a start: the extracted site-packages goes where shiv puts
it on `sys.path`, and the console script runs.

A first start (nothing extracted yet) copies the payload out under `SHIV_ROOT`, named as this zipapp is (shiv names
its extraction after the archive), has shiv's own code extract it where a warm start looks, and deletes the copy.
A start with a `SHIV_*` setting other than `SHIV_ROOT` runs shiv's own bootstrap on such a copy, which it keeps in
`<SHIV_ROOT>/<name>_<build id>.payload/` (shiv's settings are for debugging; that process sees the copy as its
archive, `sys.argv[0]`).
"""

import os
import sys

# Filled in by scripts/build-zipapp from the payload's environment.json.
BUILD_ID = "@BUILD_ID@"
ENTRY_MODULE = "@ENTRY_MODULE@"
ENTRY_FUNCTION = "@ENTRY_FUNCTION@"
PAYLOAD = "payload.pyz"


def _root() -> str:
    return os.path.expanduser(os.environ.get("SHIV_ROOT") or "~/.shiv")


def _name() -> str:
    return os.path.basename(os.path.realpath(sys.argv[0]))


def _site() -> str:
    """Where shiv's `cache_path` puts this build's site-packages."""
    return os.path.join(_root(), f"{_name()}_{BUILD_ID}", "site-packages")


def _payload_folder() -> str:
    """Where copies of the payload go: beside this build's extraction, named after it."""
    return os.path.join(_root(), f"{_name()}_{BUILD_ID}.payload")


def _start(site: str) -> None:
    # Before the first site-packages already on the path (none under `python -S`: then last), as shiv orders it.
    stems = [os.path.splitext(os.path.basename(p))[0] for p in sys.path]
    first = next((i for i, stem in enumerate(stems) if stem in ("site-packages", "dist-packages")), None)
    sys.path.insert(first or len(sys.path), site)
    from importlib import import_module

    sys.exit(getattr(import_module(ENTRY_MODULE), ENTRY_FUNCTION)())


def _copy_payload(folder: str) -> str:
    """shiv's archive, copied out of this one into `folder` under this zipapp's name (written whole first, so a
    start beside this one never reads half a file)."""
    import shutil
    import zipfile

    inner = os.path.join(folder, _name())
    partial = f"{inner}.{os.getpid()}.tmp"
    with zipfile.ZipFile(sys.argv[0]) as outer, outer.open(PAYLOAD) as src, open(partial, "wb") as dst:
        shutil.copyfileobj(src, dst)
    os.replace(partial, inner)
    return inner


def _extract() -> None:
    """A first start: shiv's own code extracts the payload's site-packages (under its lock, compiled as built)."""
    import shutil
    import tempfile
    import zipfile
    from pathlib import Path

    os.makedirs(_root(), exist_ok=True)
    # A folder of its own: two first starts at once each copy and delete their own; shiv's lock orders the extraction.
    inner = _copy_payload(tempfile.mkdtemp(prefix=os.path.basename(_payload_folder()) + "-", dir=_root()))
    sys.path.insert(0, inner)
    try:
        import _bootstrap  # type: ignore[import-not-found]
        from _bootstrap.environment import Environment  # type: ignore[import-not-found]

        with zipfile.ZipFile(inner) as archive:
            env = Environment.from_json(archive.read("environment.json").decode())
            _bootstrap.extract_site_packages(archive, Path(_site()).parent, env.compile_pyc, env.compile_workers)
    finally:
        sys.path.remove(inner)
        for name in [m for m in sys.modules if m == "_bootstrap" or m.startswith("_bootstrap.")]:
            del sys.modules[name]
        # zipimport keeps the copy's table of contents (~2,400 entries, ~1.4 MiB) for the whole run otherwise.
        import zipimport

        for key in [k for k in sys.path_importer_cache if k == inner or k.startswith(inner + os.sep)]:
            del sys.path_importer_cache[key]  # the package's importer holds the same table
        getattr(zipimport, "_zip_directory_cache", {}).pop(inner, None)
        shutil.rmtree(os.path.dirname(inner), ignore_errors=True)


def _shiv_bootstrap() -> None:
    folder = _payload_folder()
    os.makedirs(folder, exist_ok=True)
    inner = _copy_payload(folder)
    sys.argv[0] = inner
    sys.path.insert(0, inner)
    import _bootstrap

    _bootstrap.bootstrap()


if any(name.startswith("SHIV_") and name != "SHIV_ROOT" for name in os.environ):
    _shiv_bootstrap()
else:
    _here = _site()
    if not os.path.exists(_here):
        _extract()
    _start(_here)
