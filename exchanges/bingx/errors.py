"""BingX error codes (old and new sets, protocol page §3.19) mapped to typed errors."""

from __future__ import annotations

from exchanges.base import CredentialsRefused, ExchangeError


class BingXError(ExchangeError):
    """A reply with ``code != 0`` (HTTP 200 can carry one). ``code`` and ``msg`` are BingX's."""

    retryable = False

    def __init__(self, code: int, msg: str, *, path: str = "") -> None:
        super().__init__(f"BingX {code}: {msg}" + (f" ({path})" if path else ""))
        self.code = code
        self.msg = msg
        self.path = path


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
    100410: RateLimited,
    100500: Busy, 109500: Busy, 110500: Busy, 80019: Busy,
    101204: Refused, 101253: Refused, 101206: Refused, 101212: Refused, 80001: Refused,
    101205: Refused, 80017: Refused, 109420: Refused,
    101400: Refused, 110422: Refused, 110425: Refused,
    101290: Refused, 101481: Refused, 109201: Refused, 101419: Refused, 80013: Refused,
    109403: Refused, 101515: Refused, 80020: Refused, 101415: Refused, 101209: Refused, 101211: Refused,
    110411: Refused, 110412: Refused, 110413: Refused, 110414: Refused, 110406: Refused, 110407: Refused,
    109421: OrderNotFound, 80016: OrderNotFound, 109414: OrderNotFound, 80018: OrderNotFound,
    109400: InvalidRequest, 80014: InvalidRequest, 100400: InvalidRequest, 100404: InvalidRequest,
    104103: InvalidRequest, 109401: InvalidRequest,
}


SHARED_CODES: dict[int, tuple[str, type[BingXError], type[BingXError]]] = {
    100421: ("timestamp", TimestampError, Refused),  # also "pair restricted from API trading"
    80012: ("margin", Refused, Busy),  # also "margin is not enough"
}
"""Codes BingX uses for two things (protocol page §0), told apart by a word of ``msg``:
code -> (word, the error when msg has it, the error when not)."""


def error_for(code: int, msg: str, *, path: str = "") -> BingXError:
    """The typed error of a reply code; unknown codes are plain BingXError (not retried)."""
    shared = SHARED_CODES.get(code)
    if shared is not None:
        word, with_word, without = shared
        return (with_word if word in msg.lower() else without)(code, msg, path=path)
    return CODES.get(code, BingXError)(code, msg, path=path)
