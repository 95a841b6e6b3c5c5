"""The `gateway` command and the process around a running gateway: the CLI (cli.py, its docs clidoc.py), the serve
loop that takes the lock and respawns (serve.py), control of a running one (control.py), the lock file, process
lookup through /proc, terminal output, the OS service unit (os_service.py), `gateway user`, `gateway secrets`, and
the open-files limit.

May import: gateway.config, gateway.logs, gateway.errors, gateway.ws (for `gateway chat`), gateway.http.credentials
(`gateway user` hashes passwords like the API), storage/ (commands that work on the database with the gateway
stopped), and gateway.runtime (only serve.py, to run it). Nothing in gateway/ imports this package except
runtime.py (the open-files limit) and `__main__`.
"""
