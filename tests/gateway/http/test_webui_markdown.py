"""Replies rendered as Markdown in a real Chromium: the blocks a chat needs, sanitized under the page's strict CSP,
and a long reply streamed with linear work that never rebuilds the blocks already shown."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import httpx
import trio
from playwright.sync_api import Page

from gateway.http.webui import ROOT
from tests.conftest import TOKEN, RunningGateway, make_config, start_gateway
from tests.gateway.browser import in_browser, login_with_token, require_chromium

# marked 18.3.0 (`npm pack marked@18.3.0`, lib/marked.esm.js), MIT, unchanged.
MARKED_SHA256 = "4d2d824f3035e79b6887380d88c6c9ca0958215d1f4f6c053c562d60babc7172"

REPLY = """## Plan for *today*

1. read the **logs**
2. fix ~~nothing~~ the bug

- [x] done item
- [ ] open item

| name | count |
|:-----|------:|
| apples | `3` |

```python
print("a < b && c")
```

> quoted &amp; kept

Links: [docs](https://example.com/docs "Docs"), <https://example.org>, [mail](mailto:ops@example.com),
[bad](javascript:window.__pwned=1), [rel](/api/logs) and ![logo](https://example.com/logo.png).

<div onclick="window.__pwned=1">a block of HTML</div>

<img src=x onerror="window.__pwned=1"><script>window.__pwned=1</script>

<b>not bold</b> and &#x41;&lt;"""

# Every element the renderer may make inside a reply; anything else would be markup that came from the reply.
ALLOWED_TAGS = {
    "P", "H1", "H2", "H3", "H4", "H5", "H6", "STRONG", "EM", "DEL", "CODE", "PRE", "BR", "A", "SPAN", "INPUT", "UL",
    "OL", "LI", "BLOCKQUOTE", "DIV", "TABLE", "THEAD", "TBODY", "TR", "TH", "TD", "HR", "BUTTON",
}  # fmt: skip
_INSPECT = """() => {
  const root = document.querySelector('.msg.assistant.done .text');
  const all = [...root.querySelectorAll('*')];
  return {
    tags: [...new Set(all.map(e => e.tagName))],
    attrs: [...new Set(all.flatMap(e => [...e.attributes].map(a => a.name)))],
    links: [...root.querySelectorAll('a')].map(a => [a.getAttribute('href'), a.rel, a.target, a.textContent]),
    h2: root.querySelector('h2')?.innerText,
    ol: [...root.querySelectorAll('ol > li')].map(l => l.innerText),
    tasks: [...root.querySelectorAll('li.task input')].map(i => [i.checked, i.disabled]),
    th: [...root.querySelectorAll('th')].map(t => [t.innerText, t.className]),
    td: [...root.querySelectorAll('td')].map(t => t.innerText),
    code: root.querySelector('.code-block pre code')?.textContent,
    lang: root.querySelector('.code-block .lang')?.textContent,
    quote: root.querySelector('blockquote')?.innerText,
    refused: [...root.querySelectorAll('.link-refused')].map(e => e.textContent),
    image: root.querySelector('.image-link')?.textContent,
    raw: [...root.querySelectorAll('.raw-html')].map(e => e.textContent.trim()),
    blocks: [...root.children].map(e => e.innerText.trim()),
    pwned: window.__pwned === undefined ? null : String(window.__pwned),
  };
}"""


async def test_a_reply_is_rendered_as_sanitized_markdown_with_a_copy_button(gateway: RunningGateway) -> None:
    require_chromium()
    seen: dict[str, Any] = {}

    def clipboard(page: Page) -> None:
        page.context.grant_permissions(["clipboard-read", "clipboard-write"])

    def scenario(page: Page) -> None:
        login_with_token(page, TOKEN)
        page.fill("#composer-input", REPLY)
        page.press("#composer-input", "Enter")
        page.wait_for_selector(".msg.assistant.done")
        seen.update(page.evaluate(_INSPECT))
        seen["user"] = page.inner_text(".msg.user .bubble")  # the prompt stays plain text
        page.click(".msg.assistant.done .code-block button.copy")
        page.wait_for_selector(".msg.assistant.done .code-block button.copy:has-text('Copied')")
        seen["clipboard"] = page.evaluate("() => navigator.clipboard.readText()")

    with trio.fail_after(60):
        console = await in_browser(gateway.base_url, scenario, before_load=clipboard)
    assert console.errors == []  # a CSP violation (an inline handler, style or script) would be reported here
    assert set(seen["tags"]) <= ALLOWED_TAGS, seen["tags"]
    assert "IMG" not in seen["tags"] and "SCRIPT" not in seen["tags"]
    assert not [a for a in seen["attrs"] if a.startswith("on") or a in ("style", "src", "srcdoc")], seen["attrs"]
    assert seen["pwned"] is None
    assert seen["h2"] == "Plan for today"
    assert seen["ol"] == ["read the logs", "fix nothing the bug"]
    assert seen["tasks"] == [[True, True], [False, True]]
    assert seen["th"] == [["name", "align-left"], ["count", "align-right"]] and seen["td"] == ["apples", "3"]
    assert seen["code"] == 'print("a < b && c")' and seen["lang"] == "python"
    assert seen["clipboard"] == 'print("a < b && c")'
    assert seen["quote"] == "quoted & kept"
    safe = "noopener noreferrer"
    assert seen["links"] == [
        ["https://example.com/docs", safe, "_blank", "docs"],
        ["https://example.org", safe, "_blank", "https://example.org"],
        ["mailto:ops@example.com", safe, "_blank", "mail"],
        ["https://example.com/logo.png", safe, "_blank", "[image: logo]"],  # an image is never loaded
    ]
    assert seen["refused"] == ["bad", "rel"]  # javascript: and relative links are text, not links
    assert seen["raw"] == ['<div onclick="window.__pwned=1">a block of HTML</div>']  # shown as typed
    assert seen["blocks"][-2:] == [
        '<img src=x onerror="window.__pwned=1"><script>window.__pwned=1</script>',
        "<b>not bold</b> and A<",
    ]
    assert seen["user"] == REPLY


def _long_reply() -> str:
    parts: list[str] = []
    i = 0
    while len(" ".join(parts).split()) < 3000:
        i += 1
        words = " ".join(f"word{i}x{j}" for j in range(40))
        parts.append(
            f"## Section {i}\n\n{words} with *emphasis* and `code`.\n\n- first {i}\n- second {i}\n\n"
            f"```sh\necho {i}\n```\n\n| k | v |\n|---|---|\n| {i} | {i * 2} |\n"
        )
    return "\n".join(parts)


async def test_a_3000_word_reply_streams_with_linear_work_and_never_rebuilds_a_shown_block(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    require_chromium()
    gw = await start_gateway(nursery, *make_config(tmp_path, providers={"echo": {"delay_ms": 1.0}}))
    text = _long_reply()
    seen: dict[str, Any] = {}

    def scenario(page: Page) -> None:
        login_with_token(page, TOKEN)
        page.fill("#composer-input", text)
        page.press("#composer-input", "Enter")
        # While it streams: mark the first blocks once they are on screen. A rebuilt element loses the mark.
        page.wait_for_selector(".msg.assistant.streaming .text > .table-wrap")
        page.evaluate("""() => { const t = document.querySelector('.msg.assistant.streaming .text');
                                   t.querySelector('h2').dataset.probe = 'h2';
                                   t.querySelector('.code-block').dataset.probe = 'code'; }""")
        seen["marked_while_streaming"] = page.locator(".msg.assistant.streaming [data-probe]").count()
        page.wait_for_selector(".msg.assistant.done", timeout=90_000)
        seen["probes"] = page.evaluate(
            "() => [...document.querySelectorAll('.msg.assistant.done .text > [data-probe]')].map(e => e.dataset.probe)"
        )
        fresh = page.evaluate(
            """async (text) => {
                const md = await import('/assets/js/markdown.js');
                const shown = document.querySelector('.msg.assistant.done .text');
                const fresh = document.createElement('div');
                fresh.append(md.renderMarkdown(text));
                shown.querySelectorAll('[data-probe]').forEach(e => e.removeAttribute('data-probe'));
                return { same: shown.innerHTML === fresh.innerHTML, blocks: fresh.children.length,
                         lexed: md.stats.lexed - text.length, renders: md.stats.renders };
            }""",
            text,
        )
        seen.update(fresh)

    with trio.fail_after(150):
        console = await in_browser(gw.base_url, scenario)
    assert console.errors == []
    assert len(text.split()) >= 3000
    assert seen["marked_while_streaming"] == 2
    assert seen["probes"] == ["h2", "code"], "a block shown while streaming was rebuilt"
    assert seen["same"] is True, "the streamed rendering differs from a fresh one of the whole reply"
    # Linear work: each render lexes the last few blocks (each well under 500 characters here), never the whole
    # reply so far (half of it on average, over 11 000 characters, which is quadratic over the stream).
    assert seen["renders"] > 20, seen  # it did stream in many steps
    assert seen["lexed"] / seen["renders"] < 1500, (seen["lexed"], len(text), seen["renders"])
    await gw.stop()


async def test_the_vendored_markdown_renderer_is_the_published_file(gateway: RunningGateway) -> None:
    with trio.fail_after(10):
        async with httpx.AsyncClient(base_url=gateway.base_url) as anon:
            served = await anon.get("/assets/vendor/marked.esm.js")
    assert served.status_code == 200 and served.headers["content-type"].startswith("text/javascript")
    assert hashlib.sha256(served.content).hexdigest() == MARKED_SHA256
    readme = (ROOT / "assets" / "vendor" / "README.txt").read_text()
    assert MARKED_SHA256 in readme and "marked 18.3.0" in readme
