"""Every error a client is shown, in one tree: each class an HTTP status and an upper-case code; the JSON shape is
`{"error": {"code", "message", "details"?}}` (gateway/http/responses.py renders it, and gives `Retry-After`).

    GatewayError                 500 INTERNAL_ERROR (the base; `code=`/`status=` may refine one raise)
    ├── InvalidRequestError      400 INVALID_REQUEST
    ├── UnauthorizedError        401 UNAUTHORIZED (also TOKEN_EXPIRED, INVALID_TOKEN, INVALID_GATEWAY_TOKEN, …)
    ├── ForbiddenError           403 FORBIDDEN
    │   └── OwnerOnlyError       403 OWNER_ONLY: a power that reaches the host, asked for by an account
    ├── NotFoundError            404 NOT_FOUND
    ├── NotRegularFileError      404 NOT_A_REGULAR_FILE: a folder, FIFO, socket or device where a file was asked
    ├── RequestTimeoutError      408 REQUEST_TIMEOUT: a request body that stalled
    ├── ConflictError            409 CONFLICT
    ├── GoneError                410 GONE (SKILLS_V1_GONE)
    ├── PayloadTooLargeError     413 PAYLOAD_TOO_LARGE: over a size limit, said one way (`PayloadTooLargeError.over`)
    ├── ModelsJsonTooLargeError  413 MODELS_JSON_TOO_LARGE
    ├── UnsupportedMediaError    415 UNSUPPORTED_MEDIA_TYPE
    ├── ValidationFailedError    422 VALIDATION_ERROR (`details` names each field)
    ├── SkillInstallError        422 SKILL_INVALID
    ├── A2ACardError             422 A2A_CARD_INVALID
    ├── RateLimitedError         429 RATE_LIMITED (`Retry-After`)
    ├── NoTranscriberError       501 TRANSCRIPTION_NOT_CONFIGURED
    ├── AgentError               502 AGENT_ERROR: the turn behind a waiting request failed
    ├── TranscriptionFailedError 502 TRANSCRIPTION_FAILED
    ├── UnavailableError         503 SERVICE_UNAVAILABLE
    │   └── StorageRefusedError  503 STORAGE_UNAVAILABLE: a connector's events not stored (also a TemporaryFailure)
    ├── FileTimeoutError         503 FILE_IO_TIMEOUT: the file system did not answer
    └── TurnTimeoutError         504 TIMEOUT: no reply in time; the turn goes on

Errors of the layers below stay there and are turned into the statuses above at the edge:
- actors.store.StorageUnavailableError, and an OSError of a disk that refuses writes (`actors.store.disk_refused`):
  503 STORAGE_UNAVAILABLE with `Retry-After` ("nothing was stored, retry").
- actors.base.BusyError: 429 RATE_LIMITED for a busy session, 503 for a busy connector; DeadActorError and
  AskTimeoutError (ActorError): 503 SERVICE_UNAVAILABLE.
- storage.usage.UsageCapReachedError: 429 USAGE_CAP_REACHED with `Retry-After` (the next UTC midnight) and
  `details` {used, cap, resets_at}; the turn was refused before anything of it was stored.
- actors.scheduler.ScheduleError: 422 VALIDATION_ERROR (the cron routes).
- actors.providers.base.ProviderError: the turn's `error` event, never a status of its own (a request waiting for
  the reply answers 502 AGENT_ERROR).
- storage.users.DuplicateUserError: 409 USER_EXISTS.
- gateway.outbound.OutboundRefusedError: 403 OUTBOUND_REFUSED where a client set the address; a delivery that fails
  for good in the outbox.
- storage.db.StorageError, storage.sealing.SecretsKeyError, gateway.config.file.ConfigError: at startup or in the
  CLI, an exit code and a message, never an HTTP answer.
- Anything else: 500 INTERNAL_ERROR, logged with its traceback (a bug: a client's mistake never gives a 500).
"""

from __future__ import annotations

from typing import Any

from actors.base import TemporaryFailure


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

    @classmethod
    def over(cls, limit: int, setting: str | None = None, *, what: str = "the request body") -> PayloadTooLargeError:
        """The one way every size limit is said: what was too large, the limit, and the setting that raises it."""
        raise_it = f"; send less, or raise `{setting}`" if setting else "; send less"
        return cls(f"{what} is larger than {limit} bytes{raise_it}")


class ValidationFailedError(GatewayError):
    status, code = 422, "VALIDATION_ERROR"


class RateLimitedError(GatewayError):
    status, code = 429, "RATE_LIMITED"


class UnavailableError(GatewayError):
    status, code = 503, "SERVICE_UNAVAILABLE"


class NotRegularFileError(GatewayError):
    status, code = 404, "NOT_A_REGULAR_FILE"


class GoneError(GatewayError):
    status, code = 410, "GONE"


class ModelsJsonTooLargeError(GatewayError):
    status, code = 413, "MODELS_JSON_TOO_LARGE"


class SkillInstallError(GatewayError):
    status, code = 422, "SKILL_INVALID"


class A2ACardError(GatewayError):
    status, code = 422, "A2A_CARD_INVALID"


class NoTranscriberError(GatewayError):
    status, code = 501, "TRANSCRIPTION_NOT_CONFIGURED"


class AgentError(GatewayError):
    status, code = 502, "AGENT_ERROR"


class TranscriptionFailedError(GatewayError):
    status, code = 502, "TRANSCRIPTION_FAILED"


class StorageRefusedError(UnavailableError, TemporaryFailure):
    """503: storage did not take the events. Raised in a poller, it is waited out by the connector's supervisor
    (restarted with backoff, not counted as a crash): the platform keeps the updates until they are stored."""


class FileTimeoutError(GatewayError):
    status, code = 503, "FILE_IO_TIMEOUT"


class TurnTimeoutError(GatewayError):
    status, code = 504, "TIMEOUT"
