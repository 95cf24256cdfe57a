"""Domain errors. They speak of the domain; handlers/_http.py maps them to HTTP."""

from __future__ import annotations


class PaiError(Exception):
    """Base of every error the domain raises on purpose."""

    code = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(PaiError):
    """The caller sent something malformed; `field` names the culprit when there is one."""

    code = "invalid_request"

    def __init__(self, message: str, *, field: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.field = field
        if code is not None:
            self.code = code


class PayloadTooLarge(PaiError):
    code = "payload_too_large"


class NotFound(PaiError):
    code = "not_found"


class Conflict(PaiError):
    code = "conflict"


class UpstreamUnavailable(PaiError):
    """A dependency (storage, KMS, LLM) cannot serve us now; the caller may retry later."""

    code = "service_unavailable"

    def __init__(self, message: str, *, retry_after_seconds: int = 1) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds


class Unauthenticated(PaiError):
    """No usable credential: missing, malformed, unknown or revoked API key."""

    code = "unauthorized"


class RateLimited(PaiError):
    """The caller is over one of their limits (request rate, daily model tokens); retry later."""

    code = "rate_limited"

    def __init__(self, message: str, *, retry_after_seconds: int, code: str | None = None) -> None:
        super().__init__(message)
        self.retry_after_seconds = max(1, retry_after_seconds)
        if code is not None:
            self.code = code


class UpstreamInvalidResponse(PaiError):
    """A dependency answered, but not with anything usable (a model's garbage, a refused request)."""

    code = "bad_gateway"


class IntegrityError(PaiError):
    """Stored ciphertext failed authentication: tampered, moved, or decrypted with the wrong context."""

    code = "integrity_error"


class UnsupportedMediaType(PaiError):
    """A file of a type PAI does not read."""

    code = "unsupported_media_type"


class UnreadableDocument(PaiError):
    """A file that cannot be read as its type (corrupt, truncated, password-protected, without text,
    or expanding past the parser's bounds); the message says why."""

    code = "unreadable_document"


class QuotaExceeded(PaiError):
    """The caller holds as much of something as one user may (documents, passages); deleting some
    makes room. Not a rate: there is no time after which it passes on its own."""

    code = "quota_exceeded"
