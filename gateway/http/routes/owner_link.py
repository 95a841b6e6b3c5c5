"""`POST /api/auth/owner-link`: the web UI trades a `gateway dashboard` link's code for the gateway token.

The code is single use and short-lived (storage/login_links.py keeps only its hash); it travels in the link's
fragment (`/#/signin/<code>`), which a browser never sends to a server, so it is in no access log or Referer.
"""

from __future__ import annotations

import logging
from typing import Annotated

import msgspec

from gateway.errors import UnauthorizedError
from gateway.http.api import Ctx, endpoint
from gateway.http.responses import JSON
from storage import login_links
from storage.clock import now_ms

log = logging.getLogger("gateway.users")


class OwnerLinkRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    code: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]


class OwnerLinkResponse(msgspec.Struct, kw_only=True):
    token: str  # the gateway token: what the owner's web UI holds once signed in


@endpoint(
    "POST",
    "/api/auth/owner-link",
    summary="Sign the owner in with a single-use link from `gateway dashboard` (answers the gateway token)",
    tag="auth",
    auth="none",
    group="auth",
    body=OwnerLinkRequest,
    response=OwnerLinkResponse,
    errors=(401, 422, 429),
)
async def use_owner_link(ctx: Ctx) -> JSON:
    req: OwnerLinkRequest = ctx.body
    ctx.check_auth_throttle()
    # Counted before the code is looked up, as a login is: many guesses at once cannot all slip in first.
    ctx.auth_failed()
    if not await ctx.store.call(login_links.use_login_link, req.code, now_ms=now_ms()):
        raise UnauthorizedError(
            "this sign-in link is unknown, used or expired: run `gateway dashboard` for a new one",
            code="INVALID_LINK",
        )
    ctx.auth_succeeded()
    log.info("the owner signed in to the web UI with a `gateway dashboard` link")
    # The one answer whose purpose is the secret itself: not redacted, never cached.
    return JSON({"token": ctx.runtime.token}, headers={"Cache-Control": "no-store"}, redact=False)
