"""BingX request signing (protocol page §2): HMAC-SHA256 over the raw ``k=v&...`` string.

Client rule: ASCII-sort the keys, sign the raw (unencoded) values, transmit the same order with the
values percent-encoded. Numbers are plain decimals (never ``1e-05``); JSON values such as
``stopLoss`` are compact JSON with plain-number decimals, signed raw and sent encoded.
:func:`verify` is the server side the simulator uses: order as received, values decoded, a form body
appended with no ``&``.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from decimal import Decimal
from typing import Any
from urllib.parse import quote, unquote

import msgspec

_FORBIDDEN = set("&=?#\n\r")


class SigningError(ValueError):
    """A parameter value that cannot be sent safely (it would inject another parameter)."""


def fmt(value: Any) -> str:
    """A parameter value as BingX expects it on the wire (before percent-encoding)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        text = format(value, "f")
    elif isinstance(value, float):
        text = format(Decimal(repr(value)), "f")
    elif isinstance(value, int):
        text = str(value)
    elif isinstance(value, dict | list):
        return _json(value)
    else:
        text = str(value)
    if _FORBIDDEN & set(text):
        raise SigningError(f"parameter value {text!r} contains a character that cannot be sent")
    return text


def _json(value: Any) -> str:
    """Compact JSON whose numbers are plain decimals (msgspec would write ``1E-7``)."""
    if isinstance(value, dict):
        return "{" + ",".join(f"{msgspec.json.encode(str(k)).decode()}:{_json(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_json(v) for v in value) + "]"
    if isinstance(value, str):
        return msgspec.json.encode(value).decode()
    if value is None:
        return "null"
    return fmt(value)


def _pairs(params: Mapping[str, Any]) -> list[tuple[str, str]]:
    return [(k, fmt(params[k])) for k in sorted(params)]


def sign(secret: str, message: str) -> str:
    return hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()


def payload(params: Mapping[str, Any]) -> str:
    """The raw string that is signed: sorted keys, unencoded values."""
    return "&".join(f"{k}={v}" for k, v in _pairs(params))


def signed_query(params: Mapping[str, Any], secret: str) -> str:
    """The query string to transmit: sorted, values percent-encoded, signature last."""
    pairs = _pairs(params)
    raw = "&".join(f"{k}={v}" for k, v in pairs)
    sent = "&".join(f"{k}={quote(v, safe='')}" for k, v in pairs)
    return f"{sent}&signature={sign(secret, raw)}"


def verify(secret: str, query: str, body: str = "", *, lenient: bool = False) -> bool:
    """Server side (§2.4): the signature over the received parameters, in received order, decoded."""
    provided, message = _strip_signature(query, body, decode=True)
    if provided is None:
        return False
    if hmac.compare_digest(sign(secret, message), provided):
        return True
    if lenient:  # SDKs that sign the percent-encoded values
        _, raw = _strip_signature(query, body, decode=False)
        return hmac.compare_digest(sign(secret, raw), provided)
    return False


def _strip_signature(query: str, body: str, *, decode: bool) -> tuple[str | None, str]:
    provided = None
    parts = []
    for text in (query, body):
        kept = []
        for pair in text.split("&") if text else []:
            key, _, value = pair.partition("=")
            if key == "signature":
                provided = value
                continue
            kept.append(f"{key}={unquote(value) if decode else value}")
        parts.append("&".join(kept))
    return provided, parts[0] + parts[1]
