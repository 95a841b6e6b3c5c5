"""The `gateway` command: argparse → Config → trio.run(runtime.run); every command returns an exit code."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import msgspec

from gateway import __version__
from gateway.config import (
    Config,
    ConfigError,
    Paths,
    ensure_token,
    is_loopback,
    load_config,
    paths_for,
    shorten_token,
)

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
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
    import trio

    from gateway import runtime
    from gateway.logs import setup_logging

    config, paths = _load(args)
    setup_logging(
        level=config.log.level,
        fmt=config.log.format,
        file=paths.log_file,
        max_bytes=config.log.max_bytes,
        backups=config.log.backups,
    )
    token, generated = ensure_token(config, paths)
    _say(f"gateway {__version__}")
    _say(f"  config:  {paths.config_file}{'' if paths.config_file.exists() else ' (not present: defaults)'}")
    _say(f"  data:    {paths.data_dir}")
    _say(f"  logs:    {paths.log_file}")
    if generated:
        _say(f"  token:   {token}   (new; saved to {paths.token_file})")
    else:
        src = "config" if config.server.token else str(paths.token_file)
        _say(f"  token:   {shorten_token(token)}   (from {src}; `gateway token` shows it)")
    if not is_loopback(config.server.host) and not config.server.allow_public:
        _say(
            f"  warning: listening on {config.server.host}, reachable from the network; "
            "set server.allow_public = true to silence this"
        )
    _say(
        f"  url:     http://{'localhost' if config.server.host in ('0.0.0.0', '::') else config.server.host}"
        f":{config.server.port}/"
    )

    async def main() -> None:
        await runtime.run(config, paths, token=token, handle_signals=True)

    try:
        trio.run(main)
    except OSError as exc:
        _say(
            f"error: cannot listen on {config.server.host}:{config.server.port}: {exc.strerror}; "
            "is another gateway running? try `gateway serve --port N`"
        )
        return EXIT_FAILURE
    return EXIT_OK


def cmd_token(args: argparse.Namespace) -> int:
    import secrets

    from gateway.config import write_token

    config, paths = _load(args)
    if args.rotate:
        if config.server.token:
            _say("error: the token is set in the config file (server.token); change it there")
            return EXIT_CONFIG
        token = secrets.token_urlsafe(32)
        write_token(paths, token)
        _say(f"new token saved to {paths.token_file}; restart the gateway to use it")
        print(token)
        return EXIT_OK
    token, generated = ensure_token(config, paths)
    if generated:
        _say(f"generated a new token and saved it to {paths.token_file}")
    print(token)
    return EXIT_OK


def cmd_version(args: argparse.Namespace) -> int:
    print(__version__)
    return EXIT_OK


def cmd_config(args: argparse.Namespace) -> int:
    config, paths = _load(args)
    shown = msgspec.to_builtins(config)
    if shown["server"].get("token"):
        shown["server"]["token"] = shorten_token(config.server.token)
    print(
        msgspec.json.format(
            msgspec.json.encode(
                {
                    "paths": {k: str(v) for k, v in paths.__dict__.items()}
                    if hasattr(paths, "__dict__")
                    else {f: str(getattr(paths, f)) for f in paths.__slots__},
                    "config": shown,
                }
            )
        ).decode()
    )
    return EXIT_OK


def cmd_user_add(args: argparse.Namespace) -> int:
    from gateway.useradmin import add_user, read_password
    from storage.users import DuplicateUserError

    config, paths = _load(args)
    try:
        password = read_password(args.password_stdin)
    except ValueError as exc:
        _say(f"error: {exc}")
        return EXIT_USAGE
    if len(password) < 8:
        _say("error: the password needs at least 8 characters")
        return EXIT_USAGE
    try:
        user_id = add_user(config, paths, username=args.username, email=args.email, password=password, role=args.role)
    except DuplicateUserError as exc:
        _say(f"error: {exc}")
        return EXIT_FAILURE
    _say(f"user {args.username} ({args.role}) created")
    print(user_id)
    return EXIT_OK


Command = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gateway", description="A self-hosted agent gateway.")
    parser.add_argument("--version", action="version", version=f"gateway {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="PATH", help="config file (default: $XDG_CONFIG_HOME/gateway/config.toml)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def add(name: str, fn: Command, help_: str, aliases: Sequence[str] = ()) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[common], help=help_, description=help_, aliases=list(aliases))
        p.set_defaults(fn=fn)
        return p

    p = add("serve", cmd_serve, "run the gateway in the foreground", aliases=["start"])
    p.add_argument("--host", help="address to bind (default from config: 127.0.0.1)")
    p.add_argument("--port", type=int, help="port to bind (default from config: 8741)")
    p = add("token", cmd_token, "print the gateway token (generating one if none exists)")
    p.add_argument("--rotate", action="store_true", help="replace the token with a new one")
    add("config", cmd_config, "print the effective configuration and paths (token shortened)")
    add("version", cmd_version, "print the version")
    p = add("user", cmd_user_add, "manage users: `gateway user add NAME` creates a super admin")
    p.add_argument("action", choices=["add"], help="what to do")
    p.add_argument("username", help="the new user's name (3-32 letters, digits, _ . -)")
    p.add_argument("--email", help="the user's email")
    p.add_argument("--role", choices=["super_admin", "user"], default="super_admin")
    p.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
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
