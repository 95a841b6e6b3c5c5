"""The web UI's control-panel screens in a real headless Chromium over a real gateway: the LLM provider with a
write-only key and a chat streamed from a fake OpenAI server, agent limits, MCP servers (a real stdio server),
per-user tool switches, and skills installed from a folder."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import trio
from playwright.sync_api import Page

from tests.conftest import TOKEN, RunningGateway, make_config, start_gateway
from tests.fakes.openai_server import FakeOpenAI, Script
from tests.gateway.browser import (
    Traffic,
    failed_loads,
    in_browser,
    login_with_account,
    login_with_token,
    require_chromium,
    sign_out,
    to_trio,
)
from tests.gateway.http.test_skills_rest import GOOD, skill_folder
from tests.gateway.http.test_tool_servers_rest import SERVER
from tests.gateway.rest import admin_client, register

KEY_CANARY = "sk-webui-canary-4d2e9b7a10"
ENV_CANARY = "env-webui-canary-8c1f"
SEP = " \u203a "  # how the page joins the parts of an error's `loc`
REPLY = ["Hello ", "from ", "the ", "fake ", "OpenAI ", "server, ", "word ", "by ", "word."]


def assert_nowhere(secret: str, traffic: Traffic, bodies: dict[str, str], dom: str, text: str) -> None:
    assert secret not in dom and secret not in text, "the secret is back in the page"
    assert not [k for k, v in bodies.items() if secret in v], "a response carried the secret"
    assert not [f for f in traffic.frames if secret in f], "a WebSocket frame carried the secret"


async def test_models_screen_switches_to_openai_with_a_write_only_key_and_the_chat_streams_from_it(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    require_chromium()
    fake = FakeOpenAI()
    base = await fake.start(nursery)
    fake.scripts.append(Script(texts=REPLY, pause=0.05))  # slow enough to see it stream
    gw = await start_gateway(nursery, *make_config(tmp_path))
    traffic = Traffic()
    seen: dict[str, Any] = {}

    def scenario(page: Page) -> None:
        traffic.watch(page)
        login_with_token(page, TOKEN)
        page.click("#nav a[data-route=models]")
        page.wait_for_selector("#llm-form")
        seen["before"] = page.inner_text("#view")
        seen["provider_before"] = page.input_value("#llm-provider")
        # A refused value: the server's message is shown by the form and nothing is saved.
        page.fill("#llm-temperature", "5")
        page.click("#llm-form button[type=submit]")
        seen["refused"] = page.inner_text("#llm-error")
        seen["invalid"] = page.get_attribute("#llm-temperature", "aria-invalid")
        page.fill("#llm-temperature", "")
        page.select_option("#llm-provider", "openai")
        page.fill("#llm-base_url", base)
        page.fill("#llm-model_name", "fake-gpt")
        page.fill("#llm-api_key", KEY_CANARY)
        page.click("#llm-form button[type=submit]")
        page.wait_for_selector("#llm-key-state.ok")  # the form is redrawn from the gateway's answer
        seen["key_field"] = page.input_value("#llm-api_key")
        seen["models_dom"] = page.content()
        seen["after"] = page.inner_text("#view")
        seen["active"] = page.inner_text("#providers .provider.active")
        # Agent limits.
        page.fill("#agent-max_iterations", "5")
        page.fill("#agent-max_retries", "1")
        page.click("#agent-form button[type=submit]")
        page.wait_for_selector(".toast:has-text('Agent limits saved')")
        seen["iterations"] = page.input_value("#agent-max_iterations")
        # The chat now streams from the fake OpenAI server.
        page.click("#nav a[data-route=chat]")
        page.wait_for_selector("#conn-state.live")
        page.fill("#composer-input", "hi there")
        page.press("#composer-input", "Enter")
        seen["partial"] = page.wait_for_function(
            """() => { const t = document.querySelector('.msg.assistant.streaming .text');
                       return t && t.textContent.length > 0 && t.textContent; }"""
        ).json_value()
        page.wait_for_selector(".msg.assistant.done")
        seen["reply"] = page.inner_text(".msg.assistant.done .text")
        seen["dom"] = page.content()
        seen["text"] = page.inner_text("body")
        seen["bodies"] = traffic.bodies()

    with trio.fail_after(60):
        console = await in_browser(gw.base_url, scenario)
        async with admin_client(gw) as admin:
            llm = (await admin.get("/api/app-config/llm")).json()
            agent = (await admin.get("/api/app-config/agent")).json()
    assert failed_loads(console.errors, gw.base_url) == [(422, "/api/app-config/llm")]  # the refused save
    assert seen["provider_before"] == "echo" and "no API key" in seen["before"]
    assert "temperature: Expected `float` <= 2.0" in seen["refused"], seen["refused"]
    assert seen["invalid"] == "true"
    assert seen["key_field"] == "" and "API key set" in seen["after"]
    assert "openai" in seen["active"] and "active" in seen["active"]
    assert "active: openai / fake-gpt" in seen["after"]
    assert llm == {
        "base_url": base, "model_name": "fake-gpt", "temperature": None, "max_tokens": None, "provider": "openai",
        "api_key_configured": True,
    }  # fmt: skip
    assert agent == {"max_iterations": 5, "max_retries": 1, "max_search_results": 10}
    assert seen["iterations"] == "5"
    full = "".join(REPLY)
    assert full.startswith(seen["partial"]) and len(seen["partial"]) < len(full), seen["partial"]
    assert seen["reply"] == full
    assert fake.headers[-1]["authorization"] == f"Bearer {KEY_CANARY}"
    assert fake.requests[-1]["model"] == "fake-gpt" and fake.requests[-1]["messages"][-1]["content"] == "hi there"
    posts = [k for k in seen["bodies"] if k.startswith(f"POST {gw.base_url}/api/app-config/llm ")]
    assert len(posts) == 2, "the refused save and the good one"  # so the check below covers them
    assert_nowhere(KEY_CANARY, traffic, seen["bodies"], seen["dom"] + seen["models_dom"], seen["text"])
    await gw.stop()


async def test_models_screen_tries_each_provider_and_shows_an_unreachable_one_with_its_error(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    require_chromium()
    fake = FakeOpenAI()
    base = await fake.start(nursery)
    seen: dict[str, Any] = {}
    openai = ".provider[data-provider=openai]"
    with trio.socket.socket() as closed:  # bound, never listening: a connection to it is refused
        await closed.bind(("127.0.0.1", 0))
        nobody = f"http://127.0.0.1:{closed.getsockname()[1]}/v1"
        providers = {"openai": {"base_url": nobody, "api_key": KEY_CANARY}}
        gw = await start_gateway(nursery, *make_config(tmp_path, providers=providers))

        def scenario(page: Page) -> None:
            login_with_token(page, TOKEN)
            page.click("#nav a[data-route=models]")
            page.wait_for_selector(f"{openai}[data-probe]")
            page.wait_for_selector(".provider[data-provider=echo][data-probe]")
            seen["down"] = page.inner_text(openai)
            seen["echo"] = page.inner_text(".provider[data-provider=echo]")
            # Pointed at a server that answers: the card is redrawn from a new try.
            page.fill("#llm-base_url", base)
            page.click("#llm-form button[type=submit]")
            page.wait_for_selector(f"{openai}[data-probe=ok]")
            seen["up"] = page.inner_text(openai)
            seen["dom"] = page.content()

        with trio.fail_after(60):
            console = await in_browser(gw.base_url, scenario)
    assert console.errors == []
    assert "unreachable" in seen["down"] and "ConnectError" in seen["down"] and nobody in seen["down"], seen["down"]
    assert "available" not in seen["down"]
    assert "reachable" in seen["echo"]
    assert "reachable" in seen["up"] and f"{base}/models answered HTTP 200" in seen["up"], seen["up"]
    assert fake.listings and fake.listings[-1]["authorization"] == f"Bearer {KEY_CANARY}"
    assert KEY_CANARY not in seen["dom"]
    await gw.stop()


async def test_mcp_screen_adds_a_stdio_server_lists_its_tools_toggles_and_deletes_it(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    require_chromium()
    gw = await start_gateway(nursery, *make_config(tmp_path))
    traffic = Traffic()
    seen: dict[str, Any] = {}
    card = ".mcp-server[data-server=calc]"

    async def my_pref() -> bool:
        async with admin_client(gw) as admin:
            tools = (await admin.get("/api/user/tools/mcp")).json()["tools"]
        return bool(tools[0]["enabled_user"])

    def scenario(page: Page) -> None:
        traffic.watch(page)
        login_with_token(page, TOKEN)
        page.click("#nav a[data-route=mcp]")
        page.wait_for_selector("#mcp-servers >> text=No MCP servers.")
        # A stdio server without its command: the gateway's 422 names the field.
        page.fill("#mcp-name", "calc")
        page.click("#mcp-form button[type=submit]")
        seen["refused"] = page.inner_text("#mcp-error")
        seen["invalid"] = page.get_attribute("#mcp-command", "aria-invalid")
        page.fill("#mcp-command", sys.executable)
        page.fill("#mcp-args", SERVER)
        page.fill("#mcp-env", f"CALC_SECRET={ENV_CANARY}")
        page.fill("#mcp-description", "adds numbers")
        page.click("#mcp-form button[type=submit]")
        page.wait_for_selector(f"{card} .pill.state-connected", timeout=30_000)  # the page polls while it starts
        seen["card"] = page.inner_text(card)
        seen["tools"] = sorted(page.locator(f"{card} .tool").all_inner_texts())
        seen["env_field"] = page.input_value("#mcp-env")
        seen["mine"] = page.inner_text(".my-tool[data-tool=calc]")
        page.click(f"{card} input.switch")
        page.wait_for_selector(f"{card} .pill.state-disabled")
        seen["disabled"] = page.inner_text(card)
        page.click(f"{card} input.switch")
        page.wait_for_selector(f"{card} .pill.state-connected", timeout=30_000)
        seen["again"] = sorted(page.locator(f"{card} .tool").all_inner_texts())
        # The gateway token's own switch: off for the chats no account owns.
        page.click(".my-tool[data-tool=calc] input.switch")
        page.wait_for_selector(".my-tool[data-tool=calc] >> text=off in my chats")
        seen["pref"] = to_trio(my_pref)
        page.locator(f"{card} button", has_text="Delete").click()
        page.locator(f"{card} button", has_text="Really delete?").click()
        page.wait_for_selector("#mcp-servers >> text=No MCP servers.")
        seen["mine_after"] = page.inner_text("#my-tools")  # drawn in the same step as the list above
        seen["dom"] = page.content()
        seen["text"] = page.inner_text("body")
        seen["bodies"] = traffic.bodies()

    with trio.fail_after(60):
        console = await in_browser(gw.base_url, scenario)
        async with admin_client(gw) as admin:
            listed = (await admin.get("/api/app-config/mcp-servers")).json()
    assert failed_loads(console.errors, gw.base_url) == [(422, "/api/app-config/mcp-servers")]
    assert "stdio needs a command" in seen["refused"] and f"mcpServers{SEP}calc{SEP}command" in seen["refused"]
    assert seen["invalid"] == "true"
    assert "calc" in seen["card"] and "stdio · adds numbers" in seen["card"]
    assert seen["tools"] == ["add", "crash", "echo"] and seen["again"] == seen["tools"]
    assert seen["env_field"] == ""
    assert "on in my chats" in seen["mine"] and "adds numbers" in seen["mine"]
    assert "disabled" in seen["disabled"] and "tools are listed once it is connected" in seen["disabled"]
    assert seen["pref"] is False
    assert "No MCP servers to choose from." in seen["mine_after"]
    assert listed == {"mcp_servers": []}
    assert_nowhere(ENV_CANARY, traffic, seen["bodies"], seen["dom"], seen["text"])
    await gw.stop()


async def test_an_account_reads_the_config_and_switches_an_mcp_server_off_for_itself(
    gateway: RunningGateway,
) -> None:
    require_chromium()
    await register(gateway, "root")  # the first account is the super admin
    erin = await register(gateway, "erin", "erins long password")
    async with admin_client(gateway) as admin:
        # Registered but never started (the command does not exist): the preference lives in the database.
        body = {"mcpServers": {"search": {"transport": "stdio", "command": "/nonexistent/mcp", "enabled": False}}}
        assert (await admin.post("/api/app-config/mcp-servers", json=body)).status_code == 200
    seen: dict[str, Any] = {}

    def scenario(page: Page) -> None:
        login_with_account(page, "erin", "erins long password")
        page.click("#nav a[data-route=mcp]")
        page.wait_for_selector(".my-tool[data-tool=search]")
        seen["mcp"] = page.inner_text("#view")
        seen["admin_controls"] = page.locator("#mcp-form, #mcp-servers input.switch").count()
        page.click(".my-tool[data-tool=search] input.switch")
        page.wait_for_selector(".my-tool[data-tool=search] >> text=off in my chats")
        page.click("#nav a[data-route=models]")
        page.wait_for_selector("#llm-form")
        seen["models_disabled"] = page.is_disabled("#llm-provider") and page.is_disabled("#agent-max_iterations")
        seen["models_save"] = page.locator("#llm-form button[type=submit], #agent-form button[type=submit]").count()
        seen["models"] = page.inner_text("#view")
        page.click("#nav a[data-route=skills]")
        seen["skills"] = page.inner_text("#view .notice")
        sign_out(page)

    with trio.fail_after(60):
        console = await in_browser(gateway.base_url, scenario)
        mine = (await erin.client.get("/api/user/tools/mcp")).json()["tools"]
        async with admin_client(gateway) as admin:
            theirs = (await admin.get("/api/user/tools/mcp")).json()["tools"]
        await erin.client.aclose()
    assert console.errors == []  # an account is never sent to a route that refuses it
    assert "search" in seen["mcp"] and "Disabled for everyone by an admin." in seen["mcp"]
    assert seen["admin_controls"] == 0
    assert seen["models_disabled"] is True and seen["models_save"] == 0
    assert "Only an admin can change these." in seen["models"] and "echo" in seen["models"]
    assert "needs the gateway token or an admin account" in seen["skills"]
    assert [(t["tool_id"], t["enabled_user"]) for t in mine] == [("search", False)]
    assert [(t["tool_id"], t["enabled_user"]) for t in theirs] == [("search", True)]  # only erin's choice


async def test_skills_screen_installs_from_a_folder_toggles_sets_the_policy_and_deletes(
    gateway: RunningGateway, tmp_path: Path
) -> None:
    require_chromium()
    good = skill_folder(tmp_path / "notes")
    bad = skill_folder(tmp_path / "half", "---\nname: Half\n---\nno description\n")
    risky = skill_folder(tmp_path / "deploy", GOOD.replace("Release Notes", "Deployer"), **{"deploy.sh": "echo hi\n"})
    seen: dict[str, Any] = {}
    card = ".skill[data-skill=release-notes]"

    async def api(path: str) -> Any:
        async with admin_client(gateway) as admin:
            return (await admin.get(path)).json()

    def scenario(page: Page) -> None:
        login_with_token(page, TOKEN)
        page.click("#nav a[data-route=skills]")
        page.wait_for_selector("#skills >> text=No skills installed.")
        page.fill("#skill-ref", str(bad))
        page.click("#skill-form button[type=submit]")
        seen["bad"] = page.inner_text("#skill-error")
        page.fill("#skill-ref", str(good))
        page.click("#skill-form button[type=submit]")
        page.wait_for_selector(card)
        seen["card"] = page.inner_text(card)
        seen["error_left"] = page.locator("#skill-error").count()
        page.click(f"{card} input.switch")
        page.wait_for_selector(f"{card} >> text=disabled")
        seen["enabled"] = [s["enabled"] for s in to_trio(api, "/api/v2/skills")["skills"]]
        page.select_option("#skills-policy", "enforce_confirmation")
        page.wait_for_selector(".toast:has-text('now need confirmation')")
        seen["policy"] = to_trio(api, "/api/v2/skills/policy")
        # A skill with a script under the policy: the reasons, then one click to install it anyway.
        page.fill("#skill-ref", str(risky))
        page.click("#skill-form button[type=submit]")
        seen["risk"] = page.inner_text("#skill-error")
        page.click("#skill-error button:has-text('Install anyway')")
        page.wait_for_selector(".skill[data-skill=deployer]")
        page.locator(f"{card} button", has_text="Delete").click()
        page.locator(f"{card} button", has_text="Really delete?").click()
        page.wait_for_selector(card, state="detached")
        seen["left"] = [t.split("\n")[0] for t in page.locator("#skills .skill").all_inner_texts()]

    with trio.fail_after(60):
        console = await in_browser(gateway.base_url, scenario)
        skills = (await api("/api/v2/skills"))["skills"]
    install = "/api/v2/skills/install"
    assert failed_loads(console.errors, gateway.base_url) == [(422, install), (409, install)]
    assert "SKILL.md frontmatter is invalid" in seen["bad"]
    assert f"SKILL.md{SEP}frontmatter{SEP}description: required" in seen["bad"], seen["bad"]
    assert "Release Notes" in seen["card"] and "v1.2.0" in seen["card"] and "Writes release notes" in seen["card"]
    assert f"folder {good}" in seen["card"] and "2 files" in seen["card"]
    assert seen["error_left"] == 0
    assert seen["enabled"] == [False]
    assert seen["policy"] == {"mode": "enforce_confirmation"}
    assert "asks you to confirm" in seen["risk"] and "contains scripts: deploy.sh" in seen["risk"], seen["risk"]
    assert seen["left"] == ["Deployer"]
    assert [s["slug"] for s in skills] == ["deployer"]
