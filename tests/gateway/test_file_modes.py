"""Files private from their first byte: a real gateway started under a permissive umask keeps every file 0600."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import httpx

from tests.gateway.harness import CLI_TIMEOUT, Site

KEY = "sk-canary-file-modes-7f3a9c"


def _loose(root: Path) -> list[str]:
    """Every folder under `root` (itself included) that is not 0700 and every file that is not 0600."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [dirpath, *(os.path.join(dirpath, n) for n in dirnames + filenames)]:
            st = os.lstat(name)
            want = 0o700 if stat.S_ISDIR(st.st_mode) else 0o600
            if not stat.S_ISLNK(st.st_mode) and stat.S_IMODE(st.st_mode) != want:
                found.append(f"{os.path.relpath(name, root)} {stat.S_IMODE(st.st_mode):o}")
    return sorted(set(found))


def _umask_022() -> None:
    os.umask(0o022)  # what a login shell usually has: the gateway must not depend on it


def test_every_file_is_private_right_after_the_first_write(tmp_path: Path) -> None:
    site = Site(tmp_path)
    data = site.paths.data_dir
    try:
        with (tmp_path / "serve.out").open("ab") as out:
            proc = subprocess.Popen(site.argv("serve"), env=site.env, stdout=out, stderr=subprocess.STDOUT,
                                    preexec_fn=_umask_022)  # fmt: skip
        site._procs.append(proc)
        url = site.wait_serving().url
        token = site.paths.token_file.read_text().strip()
        with httpx.Client(base_url=str(url), headers={"Authorization": f"Bearer {token}"}, timeout=30) as http:
            # The README's own first write: the LLM key set over the API.
            r = http.post("/api/app-config/llm", json={"provider": "openai", "base_url": "http://127.0.0.1:9/v1",
                                                       "model_name": "m", "api_key": KEY})  # fmt: skip
            assert r.status_code == 200, r.text
            assert (data / "gateway.db-wal").exists() and (data / "gateway.db-shm").exists()
            assert _loose(data) == []
            # Uploads, both kinds.
            r = http.post("/upload", files={"file": ("notes.txt", b"private notes")})
            assert r.status_code == 200, r.text
            r = http.post("/api/files", files={"file": ("more.txt", b"more private notes")})
            assert r.status_code in (200, 201), r.text
        assert _loose(data) == []
        assert any(p.name.startswith("notes") for p in data.rglob("*")), "the upload landed in the data folder"
        assert (data / "logs" / "gateway.log").stat().st_size > 0
    finally:
        site.cleanup()


def test_cli_entry_points_and_an_older_data_folder(tmp_path: Path) -> None:
    site = Site(tmp_path)
    data = site.paths.data_dir

    def run(*args: str, stdin: str | None = None) -> None:
        r = subprocess.run(site.argv(*args), env=site.env, input=stdin, capture_output=True, text=True,
                           timeout=CLI_TIMEOUT, preexec_fn=_umask_022)  # fmt: skip
        assert r.returncode == 0, r.stderr

    run("token")
    assert _loose(data) == [] and (data / "token").exists()
    run("user", "add", "root", "--password-stdin", stdin="a long password\n")
    assert _loose(data) == [] and (data / "gateway.db").exists()
    # A folder an older version left readable by others is tightened at the next start, with one warning.
    data.chmod(0o755)
    (data / "gateway.db").chmod(0o644)
    try:
        with (tmp_path / "serve.out").open("ab") as out:
            proc = subprocess.Popen(site.argv("serve"), env=site.env, stdout=out, stderr=subprocess.STDOUT,
                                    preexec_fn=_umask_022)  # fmt: skip
        site._procs.append(proc)
        site.wait_serving()
        assert _loose(data) == []
        assert site.output().count("was readable by others") == 1
    finally:
        site.cleanup()
