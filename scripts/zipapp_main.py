"""The zipapp's `__main__.py` (scripts/build-zipapp puts it in place of shiv's): a warm start goes straight in.

shiv's bootstrap (`_bootstrap`, still in the archive) imports compileall, hashlib, shutil, subprocess, zipfile,
site and pathlib and reads the archive's table of contents a second time, about 50 ms of CPU on every start,
only to find the packages it extracted on the first. This does what it does on such a start: the extracted
site-packages goes where shiv puts it on `sys.path`, the console script runs. The first start (nothing extracted
yet), and any start with a `SHIV_*` setting other than `SHIV_ROOT`, is shiv's own bootstrap, as before.
"""

import os
import sys

# Filled in by scripts/build-zipapp from the archive's environment.json.
BUILD_ID = "@BUILD_ID@"
ENTRY_MODULE = "@ENTRY_MODULE@"
ENTRY_FUNCTION = "@ENTRY_FUNCTION@"


def _extracted() -> str | None:
    """The extracted site-packages as shiv's `cache_path` names it, if there and nothing asks for shiv's ways."""
    if any(name.startswith("SHIV_") and name != "SHIV_ROOT" for name in os.environ):
        return None
    root = os.path.expanduser(os.environ.get("SHIV_ROOT") or "~/.shiv")
    name = os.path.basename(os.path.realpath(sys.argv[0]))
    site = os.path.join(root, f"{name}_{BUILD_ID}", "site-packages")
    return site if os.path.exists(site) else None


def _start(site: str) -> None:
    # Before the first site-packages already on the path (none under `python -S`: then last), as shiv orders it.
    stems = [os.path.splitext(os.path.basename(p))[0] for p in sys.path]
    first = next((i for i, stem in enumerate(stems) if stem in ("site-packages", "dist-packages")), None)
    sys.path.insert(first or len(sys.path), site)
    from importlib import import_module

    sys.exit(getattr(import_module(ENTRY_MODULE), ENTRY_FUNCTION)())


_site = _extracted()
if _site is None:
    import _bootstrap  # type: ignore[import-not-found]

    _bootstrap.bootstrap()
else:
    _start(_site)
