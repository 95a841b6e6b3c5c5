"""`gateway onboard`: a first run, asked step by step or given as flags: provider and key, port, first admin,
the user service; it writes the config file (owner-only) and creates the admin.

Keys and passwords never go on the command line (shell history, `ps`): `--api-key-env VAR`, `--api-key-file`,
`--admin-password-file`; asked for interactively they are read without echo on a terminal.
"""

from __future__ import annotations

import argparse
import getpass
import hmac
import os
import re
import shutil
import sys
import time
import tomllib
from pathlib import Path

import msgspec

from gateway.config.file import (
    ENV_PREFIX,
    Config,
    ConfigError,
    OpenAIProviderConfig,
    Paths,
    default_config_path,
    parse_config,
    paths_for,
)
from gateway.daemon.configexample import toml_value

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
PROVIDERS = ("echo", "openai")
MIN_PASSWORD = 8
USERNAME = re.compile(r"[A-Za-z0-9_.\-]{3,32}")  # as the API takes it (gateway/http/routes/account.py)
USERNAME_RULE = "a username is 3-32 letters, digits, _ . -"
DEFAULT_PORT = Config().server.port


class OnboardError(Exception):
    def __init__(self, message: str, exit_code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class Answers(msgspec.Struct):
    provider: str = "echo"
    base_url: str = OpenAIProviderConfig().base_url
    model: str = OpenAIProviderConfig().model
    api_key: str = ""
    port: int = DEFAULT_PORT
    admin_user: str | None = None
    admin_password: str | None = None
    install_service: bool = False


class Asker:
    """Questions on stderr, answers from stdin (a terminal or a pipe); secrets without echo on a terminal."""

    def __init__(self) -> None:
        self.tty = sys.stdin.isatty()

    def _line(self, prompt: str) -> str:
        print(prompt, end="", file=sys.stderr, flush=True)
        line = sys.stdin.readline()
        if not line:
            raise OnboardError("no answer (end of input); `gateway onboard --help` shows the flags for a script")
        return line.rstrip("\n")

    def text(self, question: str, default: str) -> str:
        answer = self._line(f"{question} [{default}]: " if default else f"{question}: ").strip()
        return answer or default

    def secret(self, question: str) -> str:
        if self.tty:
            return getpass.getpass(f"{question}: ", stream=sys.stderr)
        return self._line(f"{question}: ")

    def yes(self, question: str, default: bool) -> bool:
        while True:
            answer = self._line(f"{question} [{'Y/n' if default else 'y/N'}]: ").strip().lower()
            if not answer:
                return default
            if answer in ("y", "yes", "n", "no"):
                return answer.startswith("y")
            print("  answer y or n", file=sys.stderr)

    def choice(self, question: str, choices: tuple[str, ...], default: str) -> str:
        while True:
            answer = self.text(f"{question} ({'/'.join(choices)})", default)
            if answer in choices:
                return answer
            print(f"  one of: {', '.join(choices)}", file=sys.stderr)


def _read_file(path: str, what: str) -> str:
    try:
        text = Path(path).expanduser().read_text()
    except OSError as exc:
        raise OnboardError(f"{what} {path}: {exc.strerror}") from None
    lines = text.splitlines()
    return lines[0].strip() if lines else ""


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port number (1-65535)")
    return port


def _check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise OnboardError(f"the admin password needs at least {MIN_PASSWORD} characters")
    return password


def gather(args: argparse.Namespace, ask: Asker | None) -> Answers:
    """The answers: from the flags, then (without `--yes`) asked for whatever the flags left open."""
    a = Answers()
    a.provider = args.provider or (ask.choice("LLM provider", PROVIDERS, "echo") if ask else "echo")
    if a.provider == "openai":
        a.base_url = args.base_url or (ask.text("OpenAI-compatible endpoint", a.base_url) if ask else a.base_url)
        a.model = args.model or (ask.text("model", a.model) if ask else a.model)
        if args.api_key_env:
            a.api_key = os.environ.get(args.api_key_env, "")
            if not a.api_key:
                raise OnboardError(f"--api-key-env: the environment variable {args.api_key_env} is not set")
        elif args.api_key_file:
            a.api_key = _read_file(args.api_key_file, "--api-key-file")
        elif ask:
            a.api_key = ask.secret("API key (not shown; empty for none, e.g. Ollama)").strip()
    elif args.base_url or args.model or args.api_key_env or args.api_key_file:
        raise OnboardError("--base-url, --model and the API key go with --provider openai")
    if args.port is not None:
        a.port = args.port
    elif ask:
        while True:
            try:
                a.port = _port(ask.text("port", str(DEFAULT_PORT)))
                break
            except argparse.ArgumentTypeError as exc:
                print(f"  {exc}", file=sys.stderr)
    a.admin_user = args.admin_user
    if a.admin_user is not None and not USERNAME.fullmatch(a.admin_user):
        raise OnboardError(f"--admin-user {a.admin_user!r}: {USERNAME_RULE}")
    while a.admin_user is None and ask:
        name = ask.text("first admin's username (empty: none now; `gateway user add` later)", "")
        if not name:
            break
        if USERNAME.fullmatch(name):
            a.admin_user = name
        else:
            print(f"  {USERNAME_RULE}", file=sys.stderr)
    if a.admin_user is not None:
        if args.admin_password_file:
            a.admin_password = _check_password(_read_file(args.admin_password_file, "--admin-password-file"))
        elif ask:
            while a.admin_password is None:
                password = ask.secret(f"password for {a.admin_user}")
                if len(password) >= MIN_PASSWORD:
                    a.admin_password = password
                else:
                    print(f"  the admin password needs at least {MIN_PASSWORD} characters", file=sys.stderr)
            if not hmac.compare_digest(ask.secret("again").encode(), a.admin_password.encode()):
                raise OnboardError("the passwords differ")
        else:
            raise OnboardError("--admin-user needs --admin-password-file with --yes")
    if args.install_service is not None:
        a.install_service = args.install_service
    elif ask:
        a.install_service = ask.yes("install a user service that starts the gateway at login", False)
    return a


def render_config(a: Answers) -> str:
    """The config file: only what was chosen; `gateway config --example` shows the rest."""
    lines = [
        f"# Written by `gateway onboard` on {time.strftime('%Y-%m-%d')}; every other setting and its default:",
        "# `gateway config --example`. Keep this file owner-only when it holds a key.",
        "",
        "[server]",
        f"port = {a.port}",
        "",
        "[agent]",
        f"provider = {toml_value(a.provider)}",
    ]
    if a.provider == "openai":
        lines += ["", "[providers.openai]", f"base_url = {toml_value(a.base_url)}", f"model = {toml_value(a.model)}"]
        if a.api_key:
            lines.append(f"api_key = {toml_value(a.api_key)}")
    return "\n".join(lines) + "\n"


def _write_private(path: Path, text: str) -> None:
    """Write `path` atomically, owner-only (0600) from its first byte, in an owner-only folder when it makes one."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def run(args: argparse.Namespace) -> int:
    say = _stderr
    path = (
        Path(args.config).expanduser()
        if args.config
        else Path(os.environ.get(f"{ENV_PREFIX}CONFIG") or default_config_path())
    )
    if path.exists() and not args.force:
        say(f"error: {path} exists already; `gateway onboard --force` replaces it (keeping a copy as .bak)")
        return EXIT_FAILURE
    ask = None if args.yes else Asker()
    try:
        answers = gather(args, ask)
        text = render_config(answers)
        config = parse_config(tomllib.loads(text), source="the new config")
    except OnboardError as exc:
        say(f"error: {exc}")
        return exc.exit_code
    except ConfigError as exc:
        say(f"error: {exc}")
        return EXIT_USAGE
    if path.exists():
        backup = path.with_name(path.name + ".bak")
        shutil.copy2(path, backup)
        say(f"kept the old config as {backup}")
    _write_private(path, text)
    say(f"wrote {path}")
    paths = paths_for(config, path.resolve())
    code = EXIT_OK
    if answers.admin_user is not None and answers.admin_password is not None:
        code = max(code, _make_admin(config, paths, answers.admin_user, answers.admin_password))
    if answers.install_service:
        code = max(code, _install(config, paths))
    say("")
    say("next:")
    if not answers.install_service:
        say(f"  gateway serve --config {path}      run it")
    else:
        say("  gateway service-start      start the service now")
    say(f"  gateway dashboard --config {path}  open the web UI signed in as the owner")
    return code


def _make_admin(config: Config, paths: Paths, name: str, password: str) -> int:
    from gateway.daemon.useradmin import add_user
    from storage.users import DuplicateUserError

    try:
        add_user(config, paths, username=name, email=None, password=password, role="super_admin")
    except DuplicateUserError:
        _stderr(f"warning: the user {name} exists already: left as it is (`gateway user passwd {name}` resets it)")
        return EXIT_OK
    except Exception as exc:  # the config is written: say what is left to do rather than a traceback
        _stderr(f"error: cannot create the admin {name}: {exc}; `gateway user add {name}` does it later")
        return EXIT_FAILURE
    _stderr(f"created the admin {name} (super_admin)")
    return EXIT_OK


def _install(config: Config, paths: Paths) -> int:
    from gateway.daemon import os_service

    kind = os_service.platform_kind()
    spec = os_service.build_spec(
        paths.config_file, graceful_timeout=config.server.graceful_timeout, log_file=paths.log_file, marker=kind
    )
    try:
        where = os_service.install(spec, kind)
    except os_service.ServiceError as exc:
        _stderr(f"error: the service is not installed: {exc}")
        return EXIT_FAILURE
    _stderr(f"installed the {kind} service{f' ({where})' if where else ''}; it starts at login")
    return EXIT_OK


def _stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--provider", choices=PROVIDERS, help="the LLM provider: echo (no model) or openai (any "
                   "OpenAI-compatible endpoint)")  # fmt: skip
    p.add_argument("--base-url", help="with openai: the endpoint (default https://api.openai.com/v1)")
    p.add_argument("--model", help="with openai: the model (default gpt-4o-mini)")
    key = p.add_mutually_exclusive_group()
    key.add_argument("--api-key-env", metavar="VAR", help="with openai: the environment variable holding the API key")
    key.add_argument("--api-key-file", metavar="PATH", help="with openai: read the API key from this file")
    p.add_argument("--port", type=_port, help=f"the port to serve on (default {DEFAULT_PORT})")
    p.add_argument("--admin-user", metavar="NAME", help="make this first admin account (a super_admin)")
    p.add_argument("--admin-password-file", metavar="PATH", help="its password, from the first line of this file")
    p.add_argument(
        "--install-service",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="install (or not) the user service that starts the gateway at login (systemd, launchd, Task Scheduler)",
    )
    p.add_argument("-y", "--yes", action="store_true", help="ask nothing: what no flag gives takes its default")
    p.add_argument("--force", action="store_true", help="replace an existing config file (the old one kept as .bak)")
