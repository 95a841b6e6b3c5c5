"""The `gateway` command: argparse → Config → trio.run(runtime.run); every command returns an exit code."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import msgspec

from gateway import __version__
from gateway.config.file import (
    Config,
    ConfigError,
    Paths,
    ensure_token,
    load_config,
    paths_for,
    shorten_token,
)
from gateway.daemon.jsonout import add_json_flag, print_json
from gateway.daemon.logread import LEVELS

if TYPE_CHECKING:
    from gateway.daemon.term import Term

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: what a shell reports for a Unix tool whose reader closed the pipe
EXIT_CONFIG = 78  # EX_CONFIG: a service manager must not restart a gateway with a bad config

log = logging.getLogger("gateway.cli")


def _say(text: str = "") -> None:
    print(text, file=sys.stderr, flush=True)


def _load(args: argparse.Namespace) -> tuple[Config, Paths]:
    config, path = load_config(Path(args.config).expanduser() if args.config else None)
    server = config.server
    if getattr(args, "host", None):
        server = msgspec.structs.replace(server, host=args.host)
    if getattr(args, "port", None) is not None:
        server = msgspec.structs.replace(server, port=args.port)
    config = msgspec.structs.replace(config, server=server)
    return config, paths_for(config, path)


def cmd_serve(args: argparse.Namespace) -> int:
    from gateway.daemon import serve

    return serve.serve(lambda: _load(args), args=args.argv, force=args.force)


def _term(stream: TextIO | None = None) -> Term:
    from gateway.daemon.term import Term

    return Term(sys.stdout if stream is None else stream)


def cmd_status(args: argparse.Namespace) -> int:
    from gateway.daemon import control

    config, paths = _load(args)
    return control.status(config, paths, as_json=args.json, term=_term())


def cmd_stop(args: argparse.Namespace) -> int:
    from gateway.daemon import control

    config, paths = _load(args)
    graceful = config.server.graceful_timeout
    return control.stop(paths, force=args.force, timeout_ms=args.timeout, term=_term(), graceful_timeout=graceful)


def cmd_restart(args: argparse.Namespace) -> int:
    from gateway.daemon import control

    config, paths = _load(args)
    return control.restart(
        paths,
        force=args.force,
        timeout_ms=args.timeout,
        term=_term(),
        graceful_timeout=config.server.graceful_timeout,
        start_if_stopped=args.start_if_stopped,
    )


def cmd_logs(args: argparse.Namespace) -> int:
    from gateway.daemon import control, logread

    config, paths = _load(args)
    secret = control.read_token(config, paths)
    return logread.logs(
        paths, lines=args.lines, follow=args.follow, secret=secret, term=_term(), level=args.level, as_json=args.json
    )


def cmd_install(args: argparse.Namespace) -> int:
    from gateway.config.file import check_token, write_token
    from gateway.daemon import os_service

    config, paths = _load(args)
    kind = os_service.platform_kind(args.platform)
    spec = os_service.build_spec(
        paths.config_file,
        host=args.host,
        port=args.port,
        graceful_timeout=config.server.graceful_timeout,
        log_file=paths.log_file,
        marker=kind,
    )
    if args.platform and not args.print:
        _say("error: --platform only goes with --print; install on the machine that runs the service")
        return EXIT_USAGE
    if args.print:
        sys.stdout.write(os_service.render(spec, kind))
        return EXIT_OK
    if args.token:
        check_token(args.token, "--token")
        if config.server.token:
            _say("error: the token is set in the config file (server.token); change it there instead of --token")
            return EXIT_CONFIG
        write_token(paths, args.token)
        _say(f"token saved to {paths.token_file}")
        from gateway.daemon import control

        control.apply_token(paths, args.token, _term(sys.stderr))
    try:
        where = os_service.install(spec, kind)
    except os_service.ServiceError as exc:
        written = os_service.unit_path(kind)
        if kind != "windows" and written.exists():
            _say(f"wrote {written}")
        _say(f"error: {exc}")
        return EXIT_FAILURE
    _say(f"installed the {kind} service{f' ({where})' if where else ''}; it starts at login")
    _say("  `gateway service-start` starts it now, `gateway service-status` shows it")
    return EXIT_OK


def cmd_uninstall(args: argparse.Namespace) -> int:
    from gateway.daemon import os_service

    kind = os_service.platform_kind()
    try:
        removed = os_service.uninstall(kind)
    except os_service.ServiceError as exc:
        _say(f"error: {exc}")
        return EXIT_FAILURE
    _say(f"removed {removed}" if removed else f"the {kind} service is not installed")
    return EXIT_OK


def cmd_service_start(args: argparse.Namespace) -> int:
    from gateway.daemon import os_service

    kind = os_service.platform_kind()
    try:
        os_service.start(kind)
    except os_service.ServiceError as exc:
        _say(f"error: {exc}")
        return EXIT_FAILURE
    _say(f"started the {kind} service; `gateway status` shows it")
    return EXIT_OK


def cmd_service_status(args: argparse.Namespace) -> int:
    from gateway.daemon import os_service
    from gateway.daemon.control import EXIT_NOT_RUNNING

    try:
        code, text = os_service.status_text(os_service.platform_kind())
    except os_service.ServiceError as exc:
        _say(f"error: {exc}")
        return EXIT_NOT_RUNNING if exc.reason == "not_installed" else EXIT_FAILURE
    print(text)
    return code


def cmd_token(args: argparse.Namespace) -> int:
    import secrets

    from gateway.config.file import write_token

    config, paths = _load(args)
    if args.rotate:
        if config.server.token:
            _say("error: the token is set by server.token (the config file or GATEWAY_SERVER_TOKEN); change it there")
            return EXIT_CONFIG
        from gateway.daemon import control

        token = secrets.token_urlsafe(32)
        write_token(paths, token)
        _say(f"new token saved to {paths.token_file}")
        applied = control.apply_token(paths, token, _term(sys.stderr))
        if args.json:
            _token_json(token, str(paths.token_file), paths, generated=True, rotated=True, applied=applied)
        else:
            print(token)
        return EXIT_OK if applied else EXIT_FAILURE
    token, generated = ensure_token(config, paths)
    if generated:
        _say(f"generated a new token and saved it to {paths.token_file}")
    if args.json:
        source = "config" if config.server.token else str(paths.token_file)
        _token_json(token, source, paths, generated=generated, rotated=False)
        return EXIT_OK
    print(token)
    _say_fingerprint(paths)
    return EXIT_OK


def _token_json(token: str, source: str, paths: Paths, **facts: bool) -> None:
    """`gateway token --json`: the token (the one answer not redacted: it is what was asked for), where it comes
    from (`config`, or the token file's path), the server identity, and what this run did."""
    from gateway.daemon.control import identity_fingerprint

    print_json({"token": token, "source": source, "identity": identity_fingerprint(paths), **facts}, redact=False)


def _say_fingerprint(paths: Paths) -> None:
    from gateway.ws.identity import identity_fingerprint

    try:
        _say(f"server identity (pin this for `/ws` v2 clients): {identity_fingerprint(paths)}")
    except (OSError, ValueError) as exc:
        _say(f"warning: cannot read the server identity key: {exc}")


def cmd_chat(args: argparse.Namespace) -> int:
    import trio

    from gateway.ws.chat import ChatState, chat, gateway_url, ws_url
    from gateway.ws.identity import identity_fingerprint

    config, paths = _load(args)
    try:
        url = ws_url(args.url) if args.url else gateway_url(config, paths)
    except ValueError as exc:
        _say(f"error: --url: {exc}")
        return EXIT_USAGE
    token = args.token or ensure_token(config, paths)[0]
    pin = args.pin
    if args.v2 and pin is None and not args.url:
        pin = identity_fingerprint(paths)  # our own gateway: its key is right here
    state = ChatState(paths.data_dir / "chat-state.json")
    state_key = f"{url} {args.chat or ''} {args.channel or ''}"
    resume: int | None = args.resume
    if resume is not None and resume < 0:
        resume = state.get(state_key) or 0
    return trio.run(
        partial(
            chat,
            url,
            token,
            chat_id=args.chat,
            channel_id=args.channel,
            resume_from=resume,
            v2=args.v2,
            pin=pin,
            message=args.message,
            state=state,
            state_key=state_key,
        )
    )


def cmd_version(args: argparse.Namespace) -> int:
    print(__version__)
    return EXIT_OK


def cmd_config(args: argparse.Namespace) -> int:
    from gateway.config.file import secret_values
    from gateway.logs import redactor

    if args.example:
        from gateway.daemon import configexample

        sys.stdout.write(configexample.render())
        return EXIT_OK
    config, paths = _load(args)
    for secret in secret_values(config):
        redactor.add(secret)
    shown = msgspec.to_builtins(config)
    if shown["server"].get("token"):
        shown["server"]["token"] = shorten_token(config.server.token)
    print(
        redactor.redact(
            msgspec.json.format(
                msgspec.json.encode(
                    {
                        "paths": {f: str(getattr(paths, f)) for f in paths.__struct_fields__},
                        "config": shown,
                    }
                )
            ).decode()
        )
    )
    return EXIT_OK


def cmd_user(args: argparse.Namespace) -> int:
    from gateway.daemon import useradmin

    config, paths = _load(args)
    return useradmin.run(args, config, paths)


def cmd_dashboard(args: argparse.Namespace) -> int:
    from gateway.daemon import dashboard

    return dashboard.run(args, *_load(args))


def cmd_onboard(args: argparse.Namespace) -> int:
    from gateway.daemon import onboard

    return onboard.run(args)


def cmd_secrets(args: argparse.Namespace) -> int:
    from gateway.daemon.secretkeys import rotate

    return rotate(*_load(args))


def cmd_backup(args: argparse.Namespace) -> int:
    from gateway.daemon import backup

    return backup.run_backup(args, *_load(args))


def cmd_restore(args: argparse.Namespace) -> int:
    from gateway.daemon import backup

    return backup.run_restore(args, *_load(args))


def cmd_doctor(args: argparse.Namespace) -> int:
    from gateway.daemon import doctor

    return doctor.run(args, lambda: _load(args))


Command = Callable[[argparse.Namespace], int]


def _millis(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of milliseconds") from None
    if value < 0:
        raise argparse.ArgumentTypeError("the timeout must be >= 0 ms")
    return value


_TIMEOUT_HELP = (
    "wait this long after SIGTERM before SIGKILL (default: the gateway's server.graceful_timeout + 5 s, "
    "so 10000 with the default 5 s drain)"
)


def build_parser(*, only: str | None = None) -> argparse.ArgumentParser:
    """The whole command line, or (`only`, a command's name or alias) the one command a run was given: each
    command's parser costs argparse work, and `user`, `dashboard`, `onboard` and `completion` import their own
    modules to describe their arguments (`gateway token` took 0.20 s of CPU with them all, 0.09 s with its own;
    a start to the first 200 on `/health` builds only `serve`'s). A word that is no command gets no parser:
    `_main` then builds them all, for argparse's error that lists them."""
    if only == "completion":
        only = None  # a completion script describes every command
    parser = argparse.ArgumentParser(prog="gateway", description="A self-hosted agent gateway.")
    parser.add_argument("--version", action="version", version=f"gateway {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="PATH", help="config file (default: $XDG_CONFIG_HOME/gateway/config.toml)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def wanted(*names: str) -> bool:
        return only is None or only in names

    # Takes the arguments of the commands left out (several add the same flags: the last one wins).
    spare = argparse.ArgumentParser(add_help=False, conflict_handler="resolve")

    def add(name: str, fn: Command, help_: str, aliases: Sequence[str] = ()) -> argparse.ArgumentParser:
        if not wanted(name, *aliases):
            return spare
        p = sub.add_parser(name, parents=[common], help=help_, description=help_, aliases=list(aliases))
        p.set_defaults(fn=fn)
        return p

    p = add("serve", cmd_serve, "run the gateway in the foreground", aliases=["start"])
    p.add_argument("--host", help="address to bind (default from config: 127.0.0.1)")
    p.add_argument("--port", type=int, help="port to bind (default from config: 8741)")
    p.add_argument(
        "--force",
        action="store_true",
        help="first stop the gateway holding this config's lock (SIGTERM, its drain, SIGKILL) and whatever "
        "else listens on the port (SIGTERM, 700 ms, SIGKILL)",
    )
    p = add("status", cmd_status, "show whether the gateway runs, where, since when and how it is doing")
    add_json_flag(p, "print the status as JSON for scripts")
    p = add("stop", cmd_stop, "stop the running gateway (SIGTERM, wait for it to drain, then SIGKILL)")
    p.add_argument("--force", action="store_true", help="SIGKILL at once")
    p.add_argument("--timeout", type=_millis, metavar="MS", help=_TIMEOUT_HELP)
    p = add(
        "restart",
        cmd_restart,
        "restart the gateway with the environment it was started with: SIGUSR1 when it runs with "
        "GATEWAY_ALLOW_SIGUSR1_RESTART=1, else stop and start; exit 3 when it is not running",
    )
    p.add_argument("--force", action="store_true", help="kill it (SIGKILL) and start a new one")
    p.add_argument("--timeout", type=_millis, metavar="MS", help=_TIMEOUT_HELP)
    p.add_argument(
        "--start-if-stopped", action="store_true", help="start the gateway in the background when none is running"
    )
    p = add("logs", cmd_logs, "print the end of the gateway's log file")
    p.add_argument("-n", "--lines", type=int, default=50, metavar="N", help="how many lines (default 50)")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new lines until Ctrl-C")
    p.add_argument(
        "--level",
        choices=list(LEVELS),
        help="only records at this level or above (with --level or --json, -n counts records: a line and its "
        "traceback)",
    )
    add_json_flag(p, "print one JSON object per record (ts, level, logger, msg, exc...) for scripts")
    p = add("install", cmd_install, "install the gateway as a user service (systemd, launchd or Task Scheduler)")
    p.add_argument("--host", help="address the service binds (default from config)")
    p.add_argument("--port", type=int, help="port the service binds (default from config)")
    p.add_argument("--token", help="save this token (16+ characters) to the token file first")
    p.add_argument("--print", action="store_true", help="print the unit, plist or command instead of installing")
    p.add_argument("--platform", choices=["linux", "darwin", "win32"], help="with --print: the platform to render for")
    add("uninstall", cmd_uninstall, "stop, disable and remove the user service")
    add("service-start", cmd_service_start, "start the installed user service")
    add("service-status", cmd_service_status, "show the service manager's report on the user service")
    p = add("token", cmd_token, "print the gateway token (generating one if none exists)")
    p.add_argument("--rotate", action="store_true", help="replace the token with a new one")
    add_json_flag(p, "print the token, where it comes from and the server identity as JSON")
    p = add("chat", cmd_chat, "chat with the agent over /ws (Ctrl-C aborts the running turn, Ctrl-D quits)")
    p.add_argument(
        "--url",
        help="the gateway: http(s)://host:port/ as `gateway serve` prints it, or ws(s)://host:port/ws "
        "(default: the running gateway of this config, found through its lock file)",
    )
    p.add_argument("--token", help="the gateway token (default: this gateway's token)")
    p.add_argument("--chat", type=int, help="chat id (default: the gateway's server.chat_id)")
    p.add_argument("--channel", type=int, help="channel id: a separate session within the chat")
    p.add_argument(
        "--resume",
        type=int,
        nargs="?",
        const=-1,
        metavar="SEQ",
        help="first replay what was missed: after SEQ, or after the last seq this command saw",
    )
    p.add_argument("--v2", action="store_true", help="use the v2 handshake (pinned key, token never sent)")
    p.add_argument("--pin", help="v2: the server fingerprint to require (`gateway token` prints it)")
    p.add_argument("-m", "--message", help="send this one message, print the answer and exit")
    p = add("config", cmd_config, "print the effective configuration and paths (token shortened, secrets redacted)")
    p.add_argument(
        "--example",
        action="store_true",
        help="print an annotated config.toml: every setting, its default, what it does",
    )
    add("version", cmd_version, "print the version")
    p = add("secrets", cmd_secrets, "re-seal the stored secrets with a new key (the gateway stopped)")
    p.add_argument("action", choices=["rotate-key"], help="what to do")
    p = add("backup", cmd_backup, "copy the database to FILE (0600, integrity-checked), the gateway running or not")
    p.add_argument("file", metavar="FILE", help="the backup file to write")
    p.add_argument("--force", action="store_true", help="replace FILE if it exists")
    p.add_argument("--json", action="store_true", help="print what was written as JSON for scripts")
    p = add("restore", cmd_restore, "replace the database with a backup, keeping the old one (the gateway stopped)")
    p.add_argument("file", metavar="FILE", help="a file written by `gateway backup`")
    p.add_argument("--key", metavar="KEYFILE", help="the secrets.key saved with the backup (installed with it)")
    p.add_argument("--json", action="store_true", help="print what was done as JSON for scripts")
    p = add("doctor", cmd_doctor, "check config, port, file modes, disk, database, provider, connectors, clock, limits")
    p.add_argument("--json", action="store_true", help="print the checks as JSON for scripts")
    if wanted("user"):
        from gateway.daemon.useradmin import add_arguments

        add_arguments(add("user", cmd_user, "manage accounts: add, list, role, ban, unban, delete, passwd, invite"))
    if wanted("dashboard"):
        from gateway.daemon import dashboard

        p = add(
            "dashboard", cmd_dashboard, "print a link that signs the owner in to the web UI (once, within 5 minutes)"
        )
        dashboard.add_arguments(p)
    if wanted("onboard"):
        from gateway.daemon import onboard

        p = add("onboard", cmd_onboard, "set up a first run: provider and key, port, first admin, the user service")
        onboard.add_arguments(p)
    if only is None:
        from gateway.daemon import completion

        completion.add_command(parser, sub, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # Before anything is created: every file and folder of this process (database, WAL, logs, uploads, tokens,
    # the service unit) is its owner's alone from its first byte (issue 14).
    os.umask(0o077)
    try:
        code = _main(argv)
        sys.stdout.flush()  # here, not at exit, so that a closed pipe is still ours to handle
        return code
    except BaseException as exc:
        from gateway.daemon.term import is_broken_pipe, silence_output

        if is_broken_pipe(exc):
            # `gateway status | head`: the reader left. Stop quietly, as Unix tools do.
            silence_output()
            return EXIT_BROKEN_PIPE
        raise


def commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The commands `parser` has, by name and alias (an alias shares its command's parser)."""
    for action in parser._actions:  # argparse keeps its subcommands here; it offers no public way to list them
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _main(argv: Sequence[str] | None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    command = words[0] if words and (words[0] == "--version" or not words[0].startswith("-")) else None
    parser = build_parser(only=command)  # "--version": no command's parser at all
    if command not in (None, "--version") and command not in commands(parser):
        parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    fn: Command | None = getattr(args, "fn", None)
    if fn is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return fn(args)
    except ConfigError as exc:
        _say(f"config error: {exc}")
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return 130
    except BaseException as exc:  # the edge: never a raw traceback, which would bypass the secrets' redaction
        from gateway.daemon.term import is_broken_pipe

        if isinstance(exc, SystemExit) or is_broken_pipe(exc):
            raise
        from actors.supervisor import describe_error
        from gateway.logs import redactor

        log = logging.getLogger("gateway")
        if log.handlers:  # our handlers redact; Python's last-resort one would not
            log.critical("the gateway stopped on an unexpected error", exc_info=exc)
        else:
            sys.stderr.write(redactor.redact("".join(traceback.format_exception(exc))))
        _say(f"error: {redactor.redact(describe_error(exc))}")
        return EXIT_FAILURE
