"""`gateway completion bash|zsh|fish`: each script, printed by a real process, completes in a real shell."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.gateway.harness import Site, require_program

# (command line so far, the word being completed, what must be offered, what must not)
CASES = [
    (["gateway"], "us", {"user"}, {"serve"}),
    (["gateway", "user"], "", {"add", "list", "role", "ban", "unban", "delete", "passwd", "invite"}, {"serve"}),
    (["gateway", "--config", "x.toml", "user"], "li", {"list"}, set()),
    (["gateway", "logs"], "--le", {"--level"}, {"--json"}),
    (["gateway", "logs"], "--", {"--level", "--json", "--follow", "--lines", "--config"}, {"--rotate"}),
    (["gateway", "logs", "--level"], "", {"debug", "info", "warning", "error", "critical"}, {"--json"}),
    (["gateway", "start"], "--f", {"--force"}, set()),  # an alias completes as its command
    (["gateway", "install", "--platform"], "d", {"darwin"}, {"linux"}),
    (["gateway", "completion"], "", {"bash", "zsh", "fish"}, set()),
    (["gateway", "user", "role", "bob"], "", {"super_admin", "user"}, set()),
    (["gateway", "token"], "--j", {"--json"}, set()),
    (["gateway", "status"], "--", {"--json", "--config"}, {"--level"}),
]


def _script(tmp_path: Path, shell: str) -> Path:
    r = Site(tmp_path).cli("completion", shell)
    assert r.returncode == 0, r.stderr
    path = tmp_path / f"gateway.{shell}"
    path.write_text(r.stdout)
    return path


def _shell(name: str) -> str:
    """The shell's path; without it the test is skipped here and fails in CI (.ci/run installs zsh and fish)."""
    found = shutil.which(name)
    if found is None:
        require_program(f"/usr/bin/{name}", name)
    return found or f"/usr/bin/{name}"


BASH_ONLY = [  # bash splits `--level=war` at the `=` (COMP_WORDBREAKS): the value still completes
    (["gateway", "logs", "--level", "="], "war", {"warning"}, {"error"}),
    (["gateway", "logs", "--level"], "=", {"debug", "info", "warning", "error", "critical"}, set()),
]


def test_bash_completes_commands_options_and_choices(tmp_path: Path) -> None:
    script = _script(tmp_path, "bash")
    lines = [f"source {script}", "complete -p gateway"]
    for words, cur, _, _ in CASES + BASH_ONLY:
        quoted = " ".join(f"'{w}'" for w in [*words, cur])
        lines.append(f"COMP_WORDS=({quoted}); COMP_CWORD={len(words)}; COMPREPLY=(); _gateway")
        lines.append('echo "${COMPREPLY[*]}"')
    r = subprocess.run([_shell("bash"), "--norc", "-c", "\n".join(lines)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    out = r.stdout.splitlines()
    assert out[0] == "complete -o default -F _gateway gateway"
    for (words, cur, want, unwanted), line in zip(CASES + BASH_ONLY, out[1:], strict=True):
        got = set(line.split())
        assert want <= got and not unwanted & got, (words, cur, got)
        assert all(g.startswith(cur.lstrip("=")) for g in got), (words, cur, got)


def test_fish_completes_commands_options_and_choices(tmp_path: Path) -> None:
    fish = _shell("fish")
    script = _script(tmp_path, "fish")
    assert subprocess.run([fish, "-n", str(script)], capture_output=True, timeout=60).returncode == 0
    for words, cur, want, unwanted in CASES:
        line = " ".join([*words, cur])
        r = subprocess.run(
            [fish, "--no-config", "-c", f"source {script}; complete -C {line!r}"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        got = {entry.split("\t")[0] for entry in r.stdout.splitlines()}
        assert want <= got and not unwanted & got, (line, got)


# zsh's completion system needs a terminal to run; its builtins are stood in for by functions that print what they
# were given, so the script's own logic (which command the words name, which options it has) runs in a real zsh.
_ZSH_STUBS = """
compdef() { }
_describe() { local name=${@[-1]}; print -l -- ${(P)name} }
compadd() { [[ $1 == -a ]] && print -l -- ${(P)2} }
_files() { print FILES }
"""


def test_zsh_script_parses_and_completes(tmp_path: Path) -> None:
    zsh = _shell("zsh")
    script = _script(tmp_path, "zsh")
    assert script.read_text().startswith("#compdef gateway\n")
    check = subprocess.run([zsh, "-n", str(script)], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stderr
    for words, cur, want, unwanted in CASES:
        quoted = " ".join(f"'{w}'" for w in [*words, cur])
        program = f"{_ZSH_STUBS}\nsource {script}\nwords=({quoted}); CURRENT={len(words) + 1}; PREFIX='{cur}'\n_gateway"
        r = subprocess.run([zsh, "-f", "-c", program], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        # _describe filters by the prefix itself in a real shell; the stand-in prints everything offered.
        got = {entry.split(":")[0] for entry in r.stdout.splitlines() if entry.startswith(cur)}
        assert want <= got and not unwanted & got, (words, cur, got)


def test_an_unknown_shell_is_a_usage_error(tmp_path: Path) -> None:
    r = Site(tmp_path).cli("completion", "tcsh")
    assert r.returncode == 2 and "invalid choice" in r.stderr
