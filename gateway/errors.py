"""The HTTP error hierarchy and the one JSON shape every error takes: {"error": {"code", "message"}}."""

from __future__ import annotations

from typing import Any


class GatewayError(Exception):
    """An error a client caused or should see: an HTTP status, an upper-case code and a message."""

    status = 500
    code = "INTERNAL_ERROR"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        details: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.details = details
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        err: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details is not None:
            err["details"] = self.details
        return {"error": err}


class InvalidRequestError(GatewayError):
    status, code = 400, "INVALID_REQUEST"


class UnsupportedMediaError(GatewayError):
    status, code = 415, "UNSUPPORTED_MEDIA_TYPE"


class UnauthorizedError(GatewayError):
    status, code = 401, "UNAUTHORIZED"


class ForbiddenError(GatewayError):
    status, code = 403, "FORBIDDEN"


class OwnerOnlyError(ForbiddenError):
    """A power that reaches the host (a command, an arbitrary path) asked for by someone other than the owner."""

    code = "OWNER_ONLY"

    def __init__(self, what: str) -> None:
        super().__init__(
            f"{what}: only the owner may do this; send the gateway token (`gateway token` on the machine), "
            "not an account's token"
        )


class NotFoundError(GatewayError):
    status, code = 404, "NOT_FOUND"


class ConflictError(GatewayError):
    status, code = 409, "CONFLICT"


class RequestTimeoutError(GatewayError):
    status, code = 408, "REQUEST_TIMEOUT"


class PayloadTooLargeError(GatewayError):
    status, code = 413, "PAYLOAD_TOO_LARGE"


class ValidationFailedError(GatewayError):
    status, code = 422, "VALIDATION_ERROR"


class RateLimitedError(GatewayError):
    status, code = 429, "RATE_LIMITED"


class UnavailableError(GatewayError):
    status, code = 503, "SERVICE_UNAVAILABLE"
