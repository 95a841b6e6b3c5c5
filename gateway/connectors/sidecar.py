"""External sidecars: start, check `/manifest` and `/health`, restart on exit or when unhealthy, serve secrets."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
from typing import TYPE_CHECKING

import httpx
import trio

from actors.connector import Answer, Inbound
from gateway.connectors.base import Context
from gateway.errors import ForbiddenError, NotFoundError

if TYPE_CHECKING:
    # external.py starts the sidecar (importing this module when it does); the type alone comes back here.
    from gateway.connectors.external import ExternalSettings

log = logging.getLogger("gateway.connectors.sidecar")

SIDECAR_PROTOCOL = 1
_BASE_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "PYTHONPATH", "VIRTUAL_ENV", "TMPDIR", "SYSTEMROOT")


class SidecarError(Exception):
    """The sidecar did not start, announced the wrong protocol, or exited."""


def sidecar_env(ctx: Context, s: ExternalSettings, token: str | None) -> dict[str, str]:
    """The child's environment: a small base, the allowed env_keys, and either injected secrets or a token."""
    cp = s.child_process
    assert cp is not None
    env = {k: os.environ[k] for k in _BASE_ENV if k in os.environ}
    for k in cp.env_keys:
        if k in os.environ:
            env[k] = os.environ[k]
    env["GATEWAY_URL"] = ctx.gateway_url()
    env["GATEWAY_CONNECTOR"] = ctx.config.name
    env["GATEWAY_SIDECAR_BASE_URL"] = s.base_url or ""
    if token is not None:
        # credential_slots: the secrets stay in the gateway; the child fetches each one with this token.
        env["GATEWAY_CREDENTIAL_TOKEN"] = token
        env["GATEWAY_CREDENTIAL_KEYS"] = ",".join(sorted(cp.credential_slots))
        env["GATEWAY_CREDENTIAL_URL"] = f"{ctx.gateway_url()}/v1/connectors/external/{ctx.config.name}/credentials"
    else:
        for k in cp.credential_env_keys:
            if k in os.environ:
                env[k] = os.environ[k]
    return env


async def run_sidecar(ctx: Context, s: ExternalSettings, client: httpx.AsyncClient) -> None:
    """Run the sidecar for one life of the connector actor; raise SidecarError when it fails or exits."""
    cp = s.child_process
    assert cp is not None and s.base_url is not None
    # A sidecar may call the gateway as it starts (its credentials): spawned before the gateway listens, it would
    # fail and be restarted once on every start (issue 15 item 10). Its token's lifetime starts after the wait.
    await ctx.wait_listening()
    token = (
        ctx.sidecar_tokens.issue(ctx.ref, cp.credential_slots, cp.credential_ttl_seconds)
        if cp.credential_slots
        else None
    )
    ctx.extra["sidecar"] = {"state": "starting", "health": None, "pid": None, "failed_health_checks": 0}
    spawned = trio.current_time()
    process = await trio.lowlevel.open_process(
        cp.command,
        env=sidecar_env(ctx, s, token),
        cwd=cp.cwd,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    ctx.extra["sidecar"]["pid"] = process.pid
    try:
        async with trio.open_nursery() as nursery:

            async def watch_exit() -> None:
                code = await process.wait()
                raise SidecarError(f"sidecar exited with code {code}")

            nursery.start_soon(watch_exit)
            await _check_manifest(client, s.base_url, cp.startup_timeout_seconds)
            failed = 0
            while True:
                health = await _health(client, s.base_url)
                starting = health == "starting" and trio.current_time() - spawned < cp.startup_timeout_seconds
                failed = 0 if health == "ready" or starting else failed + 1
                ctx.extra["sidecar"].update(state="running", health=health, failed_health_checks=failed)
                if cp.max_failed_health_checks and failed >= cp.max_failed_health_checks:
                    # Alive but of no use (issue 4, product item 5): crash the actor, so its supervisor stops this
                    # process and starts a fresh one with its backoff; the reason shows as last_error.
                    ctx.extra["sidecar"]["state"] = "unhealthy"
                    raise SidecarError(
                        f"sidecar health was {health!r} on {failed} checks in a row "
                        f"(max_failed_health_checks={cp.max_failed_health_checks}); restarting it"
                    )
                await trio.sleep(cp.health_interval_seconds)
    finally:
        if token is not None:
            ctx.sidecar_tokens.revoke(token)
        if ctx.extra["sidecar"]["state"] != "unhealthy":
            ctx.extra["sidecar"]["state"] = "stopped"
        with trio.CancelScope(shield=True):
            await _stop(process)


async def _check_manifest(client: httpx.AsyncClient, base_url: str, timeout: float) -> None:
    url = base_url.rstrip("/") + "/manifest"
    with trio.move_on_after(timeout):
        while True:
            try:
                r = await client.get(url, timeout=2.0)
            except httpx.HTTPError:
                await trio.sleep(0.1)
                continue
            data = r.json() if r.status_code == 200 else {}
            version = data.get("protocol_version") if isinstance(data, dict) else None
            if version != SIDECAR_PROTOCOL:
                raise SidecarError(f"sidecar manifest announces protocol {version!r}; expected {SIDECAR_PROTOCOL}")
            return
    raise SidecarError(f"sidecar did not serve /manifest within {timeout:g} s")


async def _health(client: httpx.AsyncClient, base_url: str) -> str:
    try:
        r = await client.get(base_url.rstrip("/") + "/health", timeout=5.0)
        data = r.json()
    except (httpx.HTTPError, ValueError):
        return "unreachable"
    status = data.get("status") if isinstance(data, dict) else None
    return status if status in ("starting", "ready", "degraded", "draining") else "unknown"


async def _stop(process: trio.Process) -> None:
    """SIGTERM, a bounded wait, then SIGKILL the sidecar's process group."""
    if process.returncode is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    with trio.move_on_after(3):
        await process.wait()
        return
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    await process.wait()


async def credential_answer(ctx: Context, msg: Inbound) -> Answer:
    """`GET .../credentials/{key}` with the sidecar's token: the secret of one allowed key, fetched on demand."""
    header = msg.headers.get("authorization", "")
    scheme, _, presented = header.partition(" ")
    grant = ctx.sidecar_tokens.check(presented.strip() if scheme.lower() == "bearer" else None, ctx.ref)
    key = msg.action.split("/", 1)[1] if "/" in msg.action else ""
    if key not in grant.keys:
        raise ForbiddenError(f"this sidecar token does not grant {key!r}")
    value = await ctx.slot_value(grant.keys[key])
    if value is None:
        raise NotFoundError(f"the secret slot for {key!r} is empty; store it with PUT /v1/runtime/secrets/{{slot}}")
    return Answer(200, {"key": key, "value": value}, headers={"Cache-Control": "no-store"}, redact=False)
