"""The secret detector: runs on the user's words before any rule or model sees them, so that a
password, key, token, card or account number is never learned (nor sent to a model for learning).

It errs on the side of dropping: a sentence that merely looks like it holds a secret is not learned."""

from __future__ import annotations

import re

# A credential word, then (after "is", ":", "=" or nothing) something that could be its value.
_CREDENTIAL_WORDS = (
    r"pass(?:word|wd|phrase|code)?|pwd|pin(?:\s*code)?|secret|api[\s_-]?key|access[\s_-]?key|secret[\s_-]?key|"
    r"private[\s_-]?key|token|bearer|credentials?|login|otp|cvv|cvc|security\s+code|recovery\s+code"
)
_CREDENTIAL = re.compile(
    rf"\b(?:{_CREDENTIAL_WORDS})\b\s*(?:(?:for|to|of)\s+[\w.@-]+\s+)?(?:is|was|are|:|=|->)?\s*[\"'`]?\S{{3,}}",
    re.IGNORECASE,
)
_KEY_SHAPES = (
    re.compile(r"\bsk-(?:proj-|live-|test-)?[A-Za-z0-9_-]{16,}"),  # OpenAI / Stripe style
    re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),  # AWS access key id
    re.compile(r"\bgh[pousr]_[A-Za-z0-9]{30,}\b"),  # GitHub tokens
    re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}"),  # Slack tokens
    re.compile(r"\bAIza[0-9A-Za-z_-]{30,}"),  # Google API keys
    re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"),  # JWTs
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
)
# A long run of letters and digits mixed (at least 20, with both): what generated secrets look like.
_OPAQUE = re.compile(r"\b(?=[A-Za-z0-9_+/=-]*\d)(?=[A-Za-z0-9_+/=-]*[A-Za-z])[A-Za-z0-9_+/=-]{20,}\b")
_CARD = re.compile(r"(?<!\d)(?:\d[ -]?){12,18}\d(?!\d)")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]){11,30}\b", re.IGNORECASE)
_ACCOUNT = re.compile(
    r"\b(?:account|acct|routing|sort\s+code|iban|bic|swift|social\s+security|ssn|passport|tax\s+id)"
    r"(?:\s+(?:number|no\.?|#))?\s*(?:is|:|=)?\s*(?=[A-Z0-9 -]*\d)[A-Z0-9][A-Z0-9 -]{3,}",
    re.IGNORECASE,
)
_SSN = re.compile(r"\b\d{3}-\d{2}-\d{4}\b")


def luhn_valid(digits: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2 == 1:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def iban_valid(text: str) -> bool:
    compact = re.sub(r"\s", "", text).upper()
    if not 15 <= len(compact) <= 34:
        return False
    rearranged = compact[4:] + compact[:4]
    numeric = "".join(str(int(char, 36)) for char in rearranged)
    return int(numeric) % 97 == 1


def secret_kind(text: str) -> str | None:  # noqa: PLR0911 (one return per kind of secret)
    """What kind of secret `text` seems to hold ("card number", say), None when it holds none.
    The kind names a category only, never the value, so it may be logged."""
    if _CREDENTIAL.search(text):
        return "credential"
    if any(shape.search(text) for shape in _KEY_SHAPES):
        return "key or token"
    for match in _CARD.finditer(text):
        digits = re.sub(r"\D", "", match.group())
        if 13 <= len(digits) <= 19 and luhn_valid(digits):
            return "card number"
    for match in _IBAN.finditer(text):
        if iban_valid(match.group()):
            return "account number"
    if _ACCOUNT.search(text) or _SSN.search(text):
        return "account number"
    if _OPAQUE.search(text):
        return "key or token"
    return None


def holds_secret(text: str) -> bool:
    return secret_kind(text) is not None
