"""A2A agents as the model's tools, end to end: the fake model calls the tool, the call reaches a fake A2A agent on
loopback over JSON-RPC (`message/send`, `message/stream`), and its answer reaches the model's next request."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import trio

from gateway.agent.a2a import A2ACallError, Answer, describe, tool_name
from storage.skills import A2AServerRow
from tests.conftest import RunningGateway
from tests.fakes.a2a_server import AgentScript, FakeA2AAgent
from tests.fakes.openai_server import FakeOpenAI, Script
from tests.gateway.agenthelpers import of_type, sse_turn, use_fake_openai
from tests.gateway.rest import admin_client, register

TOOL = "a2a__travel_planner"


def ask(call_id: str, question: str) -> Script:
    """The model's round that calls the agent's tool."""
    return Script(tool_calls=[(call_id, TOOL, ['{"message": ', f'"{question}"}}'])])


def offered(request: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {t["function"]["name"]: t["function"] for t in request.get("tools", [])}


async def registered(admin: httpx.AsyncClient, agent: FakeA2AAgent) -> dict[str, Any]:
    r = await admin.post("/api/app-config/a2a-servers", json={"base_url": agent.base_url})
    assert r.status_code == 200, r.text
    item: dict[str, Any] = r.json()
    return item


async def test_the_model_calls_an_agent_with_message_send_and_gets_its_answer(
    gateway: RunningGateway, nursery: trio.Nursery
) -> None:
    fake, agent = FakeOpenAI(), FakeA2AAgent()
    base = await fake.start(nursery)
    await agent.start(nursery)
    with trio.fail_after(60):
        async with admin_client(gateway) as admin:
            await use_fake_openai(admin, base)
            item = await registered(admin, agent)
            await register(gateway, "root")
            erin = await register(gateway, "erin")
            sid = (await erin.client.post("/api/sessions", json={})).json()["session_id"]

            agent.script = AgentScript(reply="Take the ICE via Frankfurt.")
            fake.scripts.extend([ask("call_1", "Paris to Berlin?"), Script(texts=["Take ", "the ICE."])])
            events = await sse_turn(erin.client, sid, "how do I get from Paris to Berlin?")
            assert [d["data"] for d in of_type(events, "tool_activity")] == [TOOL]
            assert of_type(events, "result")[0]["text"] == "Take the ICE."
            spec = offered(fake.requests[-2])[TOOL]
            assert "Plans trips by train." in spec["description"] and "Route finder" in spec["description"]
            assert spec["parameters"]["required"] == ["message"]
            call = agent.requests[-1]
            assert call["jsonrpc"] == "2.0" and call["method"] == "message/send" and call["id"]
            message = call["params"]["message"]
            assert message["role"] == "user" and message["messageId"]
            assert message["parts"] == [{"kind": "text", "text": "Paris to Berlin?"}]
            tool_msg = fake.requests[-1]["messages"][-1]
            assert tool_msg == {"role": "tool", "tool_call_id": "call_1", "content": "Take the ICE via Frankfurt."}

            # A Message (not a Task) is read as well.
            agent.script = AgentScript(reply="By night train.", as_task=False)
            fake.scripts.extend([ask("call_2", "and at night?"), Script(texts=["ok"])])
            await sse_turn(erin.client, sid, "at night?")
            assert fake.requests[-1]["messages"][-1]["content"] == "By night train."

            # The agent's errors go back to the model as the tool's error; the turn itself completes.
            for script, said in [
                (AgentScript(error=(-32001, "no trains today")), "no trains today"),
                (AgentScript(fails="the route service is down"), "failed: the route service is down"),
                (AgentScript(status=503), "HTTP 503"),
                (AgentScript(reply="big", padding=2 * 1024 * 1024), "larger than"),
            ]:
                agent.script = script
                fake.scripts.extend([ask("call_e", "anything?"), Script(texts=["sorry"])])
                events = await sse_turn(erin.client, sid, "try")
                content = fake.requests[-1]["messages"][-1]["content"]
                assert content.startswith(f"error: tool {TOOL} failed: ") and said in content, content
                assert of_type(events, "result")[0]["text"] == "sorry"
                assert of_type(events, "turn_ended")[-1]["state"] == "completed"

            # Erin switches the agent off for herself: her turns are not offered it, the gateway token's still are.
            r = await erin.client.post(f"/api/user/tools/a2a/{item['id']}/enabled", json={"enabled": False})
            assert r.status_code == 200
            fake.scripts.append(Script(texts=["no agent"]))
            await sse_turn(erin.client, sid, "again")
            assert TOOL not in offered(fake.requests[-1])
            mine = (await admin.post("/api/sessions", json={})).json()["session_id"]
            fake.scripts.append(Script(texts=["agent"]))
            await sse_turn(admin, mine, "and for the owner?")
            assert TOOL in offered(fake.requests[-1])
            # A tool the model names anyway (it saw it earlier) is refused for her, as an error it can read.
            calls = len(agent.requests)
            fake.scripts.extend([ask("call_x", "sneak"), Script(texts=["no"])])
            await sse_turn(erin.client, sid, "sneak")
            assert "no such tool" in fake.requests[-1]["messages"][-1]["content"]
            assert len(agent.requests) == calls

            # Disabled for everyone: offered to nobody.
            r = await admin.post(f"/api/app-config/a2a-servers/{item['id']}/enabled", json={"enabled": False})
            assert r.status_code == 200
            fake.scripts.append(Script(texts=["none"]))
            await sse_turn(admin, mine, "now?")
            assert TOOL not in offered(fake.requests[-1])
            await erin.client.aclose()


async def test_a_streaming_agent_is_called_with_message_stream(gateway: RunningGateway, nursery: trio.Nursery) -> None:
    fake, agent = FakeOpenAI(), FakeA2AAgent(streaming=True)
    base = await fake.start(nursery)
    await agent.start(nursery)
    with trio.fail_after(60):
        async with admin_client(gateway) as admin:
            await use_fake_openai(admin, base)
            await registered(admin, agent)
            sid = (await admin.post("/api/sessions", json={})).json()["session_id"]
            agent.script = AgentScript(pieces=["Take ", "the ICE ", "via Frankfurt."])
            fake.scripts.extend([ask("call_s", "Paris to Berlin?"), Script(texts=["The ICE."])])
            events = await sse_turn(admin, sid, "route?")
            assert of_type(events, "result")[0]["text"] == "The ICE."
            assert agent.requests[-1]["method"] == "message/stream"
            # The streamed artifact's chunks, put together: the progress message is not the answer.
            assert fake.requests[-1]["messages"][-1]["content"] == "Take the ICE via Frankfurt."

            agent.script = AgentScript(error=(-32603, "stream broke"))
            fake.scripts.extend([ask("call_t", "again?"), Script(texts=["sorry"])])
            events = await sse_turn(admin, sid, "again")
            assert "stream broke" in fake.requests[-1]["messages"][-1]["content"]
            assert of_type(events, "turn_ended")[-1]["state"] == "completed"


async def test_a_card_pointing_at_another_private_address_is_refused(
    gateway: RunningGateway, nursery: trio.Nursery
) -> None:
    """The owner registered the agent at one loopback origin; its card sends calls to another one. Only the origin
    the owner gave may be private: the call is refused by the outbound policy and never reaches the other server."""
    fake, elsewhere = FakeOpenAI(), FakeA2AAgent("Elsewhere")
    base = await fake.start(nursery)
    await elsewhere.start(nursery)
    agent = FakeA2AAgent(url=f"{elsewhere.base_url}/rpc")
    await agent.start(nursery)
    with trio.fail_after(60):
        async with admin_client(gateway) as admin:
            await use_fake_openai(admin, base)
            await registered(admin, agent)
            sid = (await admin.post("/api/sessions", json={})).json()["session_id"]
            fake.scripts.extend([ask("call_r", "Paris?"), Script(texts=["refused"])])
            events = await sse_turn(admin, sid, "route?")
            content = fake.requests[-1]["messages"][-1]["content"]
            assert content.startswith(f"error: tool {TOOL} failed: ") and "outbound policy" in content, content
            assert of_type(events, "turn_ended")[-1]["state"] == "completed"
    assert elsewhere.requests == [] and agent.requests == []


def test_names_and_descriptions_come_from_the_card() -> None:
    card = {"skills": [{"name": "Route finder", "description": "Finds routes."}, "junk", {"id": "x"}]}
    row = A2AServerRow(id="0123456789abcdef", base_url="http://a", name="Zürich Trains & Co!", description="Trains.",
                       card=card)  # fmt: skip
    assert tool_name(row) == "a2a__z_rich_trains_co"
    assert tool_name(row, {"a2a__z_rich_trains_co"}) == "a2a__z_rich_trains_co_abcdef"
    long = A2AServerRow(id="0123456789abcdef", base_url="http://a", name="x" * 200, description="")
    assert len(tool_name(long)) == 64 and len(tool_name(long, {tool_name(long)})) == 64
    assert describe(row) == "Ask the remote agent 'Zürich Trains & Co!' (A2A). Trains.\n- Route finder: Finds routes."


def test_an_answer_reads_messages_tasks_and_stream_updates() -> None:
    def text_part(t: str) -> dict[str, Any]:
        return {"kind": "text", "text": t}

    answer = Answer()
    answer.add({"kind": "message", "parts": [text_part("hi "), {"kind": "file"}, text_part("there")]})
    assert answer.text() == "hi there"
    streamed = Answer()
    streamed.add({"kind": "task", "status": {"state": "submitted"}})
    streamed.add({"kind": "artifact-update", "artifact": {"artifactId": "a", "parts": [text_part("one ")]}})
    streamed.add(
        {"kind": "artifact-update", "append": True, "artifact": {"artifactId": "a", "parts": [text_part("two")]}}
    )
    streamed.add({"kind": "status-update", "status": {"state": "input-required"}, "final": True})
    assert streamed.text() == "one two\n[the agent's task is input-required]"
    failed = Answer()
    failed.add({"kind": "task", "status": {"state": "rejected", "message": {"parts": [text_part("not mine")]}}})
    with pytest.raises(A2ACallError, match="rejected: not mine"):
        failed.text()
    with pytest.raises(A2ACallError, match="unknown kind"):
        Answer().add({"kind": "weird"})
    long = Answer()
    long.add({"kind": "message", "parts": [text_part("y" * 40_000)]})
    assert long.text().endswith("[cut: the answer was longer]") and len(long.text()) < 33_000
