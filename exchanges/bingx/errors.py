"""BingX error codes (old and new sets, protocol page §3.19, ccxt's exception table) mapped to typed errors.

A code alone does not always say what happened: ``100421`` is a timestamp outside the window *or* a pair
restricted from API trading, ``80012`` is "system busy" *or* "margin is not enough" (then its ``msg`` is
a wrapped error, ``{"Code":101253,"Msg":"margin is not enough"}``). :func:`error_for` reads the wrapped
code first, then the message rules, then the code table.
"""

from __future__ import annotations

import re

import msgspec

from gatebot.core.exchange import CredentialsRefused, ExchangeError


class BingXError(ExchangeError):
    """A reply with ``code != 0`` (HTTP 200 can carry one). ``code`` and ``msg`` are BingX's."""

    retryable = False

    def __init__(self, code: int, msg: str, *, path: str = "", wrapper: int | None = None) -> None:
        shown = f"{wrapper} ({code})" if wrapper is not None else str(code)
        super().__init__(f"BingX {shown}: {msg}" + (f" ({path})" if path else ""))
        self.code = code
        """The code that says what happened (the wrapped one when the reply wraps another)."""
        self.msg = msg
        self.path = path
        self.wrapper = wrapper
        """The reply's own code when it wrapped ``code`` in its message (80012 wrapping 101253), else None."""


class UnreadableReply(BingXError):
    """A reply that is not JSON, not an envelope, or whose ``data`` does not have the expected shape. For a
    state-changing request the outcome is unknown (the request may have run): callers say so
    (``OrderUnknown``) and find out by querying, never by sending again."""

    def __init__(self, msg: str, *, path: str = "") -> None:
        super().__init__(-1, msg, path=path)


class AuthError(BingXError, CredentialsRefused):
    """Bad key, signature, permission or IP: nothing will work until the operator fixes it."""


class TimestampError(BingXError):
    """The request's timestamp is outside the receive window: the clock offset is re-measured."""

    retryable = True


class RateLimited(BingXError):
    retryable = True


class Busy(BingXError):
    """The exchange is busy: for a submission this means the outcome is unknown."""

    retryable = True


class Refused(BingXError):
    """A definite business refusal of an order (margin, minimums, side, duplicate id ...)."""


class OrderNotFound(BingXError):
    """The order does not exist (or no longer): for a cancel this is success."""


class InvalidRequest(BingXError):
    """Parameters or mode mismatch: a bug or a misconfiguration, never retried."""


CODES: dict[int, type[BingXError]] = {
    100001: AuthError, 100004: AuthError, 100412: AuthError, 100413: AuthError, 100419: AuthError,
    100421: TimestampError,
    100410: RateLimited,
    100500: Busy, 80012: Busy, 109500: Busy, 110500: Busy, 80019: Busy,
    101204: Refused, 101253: Refused, 101206: Refused, 101212: Refused, 80001: Refused,
    101205: Refused, 80017: Refused, 109420: Refused,
    101400: Refused, 110422: Refused, 110425: Refused,
    101290: Refused, 101481: Refused, 109201: Refused, 101419: Refused, 80013: Refused,
    109403: Refused, 101515: Refused, 80020: Refused, 101415: Refused, 101209: Refused, 101211: Refused,
    110411: Refused, 110412: Refused, 110413: Refused, 110414: Refused, 110406: Refused, 110407: Refused,
    109421: OrderNotFound, 80016: OrderNotFound, 109414: OrderNotFound, 80018: OrderNotFound,
    109400: InvalidRequest, 80014: InvalidRequest, 100400: InvalidRequest, 100404: InvalidRequest,
    104103: InvalidRequest, 109401: InvalidRequest,
    109425: InvalidRequest, 109418: Refused, 100414: Refused, 100202: Refused,
}

MESSAGES: dict[int, tuple[tuple[str, type[BingXError]], ...]] = {
    # code: (lower-case text in msg, the error it then is), first match wins; no match: CODES.
    100421: (("restricted", Refused),),  # "This pair is currently restricted from API trading"
    80012: (("margin", Refused), ("insufficient", Refused)),  # "margin is not enough"
}

_WRAPPED_TEXT = re.compile(r"^\s*code\s*[:=]\s*(\d+)\s*,\s*msg\s*[:=]\s*(.*)$", re.IGNORECASE | re.DOTALL)


def unwrap(msg: str) -> tuple[int, str] | None:
    """The error a message wraps: ``{"Code":101253,"Msg":"..."}`` or ``Code: 100414, Msg: ...``."""
    text = msg.strip()
    if text.startswith("{"):
        try:
            inner = msgspec.json.decode(text)
        except msgspec.DecodeError:
            return None
        if not isinstance(inner, dict):
            return None
        fields = {str(k).lower(): v for k, v in inner.items()}
        code = fields.get("code")
        if isinstance(code, bool) or not isinstance(code, int | str) or not str(code).isdigit():
            return None
        return int(code), str(fields.get("msg") or "")
    match = _WRAPPED_TEXT.match(text)
    return (int(match[1]), match[2].strip()) if match else None


def error_for(code: int, msg: str, *, path: str = "") -> BingXError:
    """The typed error of a reply code and message; unknown codes are plain BingXError (not retried)."""
    wrapper = None
    inner = unwrap(msg)
    if inner is not None and inner[0] != code:
        wrapper, (code, msg) = code, inner
    lowered = msg.lower()
    for needle, kind in MESSAGES.get(code, ()):
        if needle in lowered:
            return kind(code, msg, path=path, wrapper=wrapper)
    if wrapper is not None and code not in CODES:
        return error_for(wrapper, msg, path=path)  # a wrapped code we do not know: the outer one decides
    return CODES.get(code, BingXError)(code, msg, path=path, wrapper=wrapper)
