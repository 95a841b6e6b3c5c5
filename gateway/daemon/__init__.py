"""The `gateway` command and the process around a running gateway, outside the event loop's features.

cli.py (argparse; clidoc.py renders docs/cli.md from it), serve.py (the serve loop: lock, port, signals, respawn),
launch.py (its exit codes, environment and command line, a detached start: no trio), control.py (status, stop,
restart of a running gateway), lock.py, procs.py (/proc), term.py, os_service.py (the systemd unit, LaunchAgent,
Windows task), useradmin.py (`gateway user`), secretkeys.py (`gateway secrets`), fdlimit.py (the open-files limit,
which runtime.py applies at start), logread.py (`gateway logs`), jsonout.py (every `--json`), completion.py,
configexample.py (`gateway config --example`), dashboard.py and onboard.py (each its command).

May import: gateway.config, gateway.logs, gateway.errors, gateway.ws (`gateway chat` and the identity key),
gateway.http.credentials (`gateway user` hashes like the API), gateway.runtime (serve.py only, to run it),
actors/ (to describe an error) and storage/ (commands that work on the database of a stopped gateway). Imported
only by `__main__`, runtime.py (fdlimit) and gateway.ws.chat (the lock and control, to find a running gateway).
"""
