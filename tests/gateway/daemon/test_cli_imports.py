"""A short `gateway …` command loads neither the event loop's library nor the HTTP stack until it needs them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
HEAVY = ("trio", "httpx", "hypercorn", "starlette", "nacl")


def test_the_cli_and_the_config_load_no_heavy_library(tmp_path: Path) -> None:
    # What every command does before its own work: import the CLI, load and validate the config (trusted proxies
    # included, which parse addresses). trio alone was 0.1-0.3 s of each command's start.
    config = tmp_path / "config.toml"
    config.write_text('[server]\ntrusted_proxies = ["10.0.0.0/8", "::1"]\n')
    code = (
        "import sys\n"
        "from gateway.daemon import cli\n"
        "from gateway.config.file import load_config\n"
        "from pathlib import Path\n"
        "load_config(Path(sys.argv[1]))\n"
        f"print(' '.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    r = subprocess.run([sys.executable, "-c", code, str(config)], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [], f"loaded: {r.stdout}"
