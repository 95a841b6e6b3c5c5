"""Every long-lived task of a running gateway is owned by a supervisor, found by walking trio's task tree.

The convention (actors/supervisor.py, docs/architecture.md): a Supervisor runs each child in a task named
`supervised:<child name>`, and a child's own tasks are its descendants (their crash is the child's crash, which the
supervisor restarts). The runtime root owns only its structural nurseries: the two supervisors' and the edge's
(hypercorn serving HTTP, and the /ws connections' helpers, whose tasks end with their sockets).
"""

from __future__ import annotations

from pathlib import Path

import httpx
import trio
import trio.lowlevel

from actors.supervisor import SUPERVISED
from gateway.core import Runtime
from gateway.runtime import run
from gateway.ws.client import connect
from tests.conftest import TOKEN, make_config
from tests.gateway.connectors.helpers import wait_for

SHARED = "supervision-shared-token-01"
EDGE = ("hypercorn.trio.serve", "gateway.runtime._end_edge_when_drained", "gateway.runtime._connection_helpers")


def _find(name: str) -> trio.lowlevel.Task:
    pending = [trio.lowlevel.current_root_task()]
    while pending:
        task = pending.pop()
        if task is not None and task.name == name:
            return task
        for nursery in task.child_nurseries if task is not None else []:
            pending.extend(nursery.child_tasks)
    raise AssertionError(f"no task named {name}")


def _unowned(root: trio.lowlevel.Task) -> tuple[list[str], set[str]]:
    """The tasks under `root` that no supervisor owns (with their path), and the supervised children's names."""
    bad: list[str] = []
    supervised: set[str] = set()

    def walk(task: trio.lowlevel.Task, path: str, owned: bool) -> None:
        for nursery in task.child_nurseries:
            children = list(nursery.child_tasks)
            # A nursery holding supervised children is a Supervisor's: it holds nothing else.
            holds_children = any(t.name.startswith(SUPERVISED) for t in children)
            for child in children:
                here = f"{path} > {child.name}"
                is_child = child.name.startswith(SUPERVISED)
                if is_child:
                    supervised.add(child.name.removeprefix(SUPERVISED))
                edge = task is root and child.name in EDGE
                if (holds_children and not is_child) or not (owned or is_child or edge):
                    bad.append(here)
                walk(child, here, owned or is_child or edge)

    walk(root, root.name, False)
    return bad, supervised


async def test_every_long_lived_task_of_a_running_gateway_is_owned_by_a_supervisor(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    config, paths = make_config(
        tmp_path,
        connectors={"external": {"ext": {"shared_token": {"value": SHARED}}}},
        # The session stays live while its client listens (the default parks it 0.25 s after the turn): its task
        # is one of those walked below.
        sessions={"subscribed_idle_timeout": 60},
    )

    async def gateway_root(task_status: trio.TaskStatus[Runtime]) -> None:
        await run(config, paths, token=TOKEN, task_status=task_status)

    runtime: Runtime = await nursery.start(gateway_root, name="gateway-root")
    base = runtime.binds[0]
    with trio.fail_after(30):
        # Wake what runs on demand too: a session (a /ws turn) and the ingress dispatcher (a batch).
        async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {SHARED}"}) as c:
            batch = {"protocol_version": 2, "events": [{"event_id": "e1", "thread": {"path": ["t"]}, "content": "hi"}]}
            r = await c.post("/v1/connectors/external/ext/events/batch", json=batch)
            assert r.status_code == 200, r.text
        async with connect(base.replace("http://", "ws://") + "/ws", TOKEN, chat_id=3) as ws:
            await ws.send_message("hello")
            async for frame in ws.frames():
                if frame["type"] == "result":
                    break
            connectors = runtime.connectors
            assert connectors is not None
            await wait_for(lambda: _async(connectors.dispatcher.turns >= 1))
            bad, supervised = _unowned(_find("gateway-root"))
    assert bad == [], "long-lived tasks no supervisor owns:\n" + "\n".join(bad)
    expected = {
        "store",
        "router",
        "session:api:3",
        "mcp",
        "connector-service",
        "connector-registry",
        "connector:external/ext",
        "ingress-dispatcher",
        "outbox",
        "connector-backlog",
        "background-turns",
        "scheduler",
    }
    assert expected <= supervised, sorted(supervised)
    runtime.shutdown.set()


async def _async(value: bool) -> bool:
    return value
