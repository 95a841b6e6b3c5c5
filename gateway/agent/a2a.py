"""A2A servers: fetch and validate an agent's card from its base URL."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gateway.errors import A2ACardError
from gateway.outbound import OutboundRefusedError
from storage.ids import new_id
from storage.skills import A2AServerRow

if TYPE_CHECKING:
    import httpx

CARD_PATHS = ("/.well-known/agent-card.json", "/.well-known/agent.json")  # current path first, then the older one
MAX_CARD_BYTES = 256 * 1024


def _strings(value: Any) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else []


def card_to_row(base_url: str, card: dict[str, Any]) -> A2AServerRow:
    """Validate an agent card and project the fields the listing shows."""
    name = card.get("name")
    if not isinstance(name, str) or not name.strip():
        raise A2ACardError("the agent card has no name")
    caps = card.get("capabilities") if isinstance(card.get("capabilities"), dict) else {}
    assert isinstance(caps, dict)
    return A2AServerRow(
        id=new_id(),
        base_url=base_url,
        name=name.strip()[:200],
        description=str(card.get("description") or "")[:2000],
        input_modes=_strings(card.get("defaultInputModes")),
        output_modes=_strings(card.get("defaultOutputModes")),
        streaming=bool(caps.get("streaming")),
        push_notifications=bool(caps.get("pushNotifications")),
        card=card,
    )


async def fetch_card(base_url: str, *, client: httpx.AsyncClient) -> A2AServerRow:
    """GET the agent card (current well-known path, then the legacy one); raise A2ACardError on any failure."""
    if not base_url.startswith(("http://", "https://")):
        raise A2ACardError("base_url must start with http:// or https://")
    import httpx  # the caller made the client; bound here for the except clause

    base = base_url.rstrip("/")
    last = ""
    for path in CARD_PATHS:
        try:
            r = await client.get(base + path)
        except OutboundRefusedError as exc:
            raise A2ACardError(f"cannot fetch the agent card: {exc}", status=403, code="OUTBOUND_REFUSED") from None
        except (httpx.HTTPError, httpx.InvalidURL, ValueError) as exc:  # InvalidURL is no HTTPError
            raise A2ACardError(f"cannot reach {base}: {type(exc).__name__}") from None
        if r.status_code == 404:
            last = f"{path} not found"
            continue
        if r.status_code != 200:
            raise A2ACardError(f"{base}{path} answered HTTP {r.status_code}")
        if len(r.content) > MAX_CARD_BYTES:
            raise A2ACardError("the agent card is too large")
        try:
            card = r.json()
        except ValueError:
            raise A2ACardError(f"{base}{path} is not JSON") from None
        if not isinstance(card, dict):
            raise A2ACardError("the agent card must be a JSON object")
        return card_to_row(base, card)
    raise A2ACardError(f"no agent card at {base} ({last})")
