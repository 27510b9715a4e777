"""Client order ids: the one place that makes and reads them.

An id names the journal that sent the order and what it was for, so that recovery can ask the exchange
about it after any crash: ``<instance>-<epoch>-<position seq>-<role><attempt>``, e.g. ``btc-k3f9q-2-s1``
(role ``e`` entry, ``s`` stop, ``x`` close, ``t`` take profit). The epoch is given to a journal when it is
created (stored in its ``meta``): a new journal of the same instance counts its positions from 1 again,
and without the epoch its ids would be the old journal's (a new journal taking an old order's fill for
its own). Journals written before epochs existed have the legacy epoch ``""``, whose ids keep their old
form ``<instance>-<seq>-<role><attempt>``. Instance names never hold a ``-`` (core/config.py), so the
number of parts tells the two forms apart.

BingX takes 1-40 characters and lower-cases them: everything here is lower case, and :func:`make`
refuses an id longer than :data:`MAX_LEN` (the longest the code makes: a 20-character instance, a
5-character epoch, position 9,999,999 and attempt 9,999 is exactly 40).
"""

from __future__ import annotations

import random
import re
from typing import Literal, NamedTuple

MAX_LEN = 40
"""BingX's limit on a client order id."""
LEGACY = ""
"""The epoch of a journal written before epochs existed: its ids have no epoch part."""
EPOCH_LEN = 5
EPOCH_SPACE = 36**EPOCH_LEN
"""5 base36 characters: 60 million epochs, so two journals of one instance practically never share one."""
_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"
_INSTANCE = re.compile(r"[a-z0-9][a-z0-9_]{0,19}")
_EPOCH = re.compile(rf"[0-9a-z]{{{EPOCH_LEN}}}")
_TAIL = re.compile(r"([esxt])([0-9]+)")

Role = Literal["entry", "stop", "close", "take_profit"]
ROLES: dict[str, Role] = {"e": "entry", "s": "stop", "x": "close", "t": "take_profit"}


class ClientId(NamedTuple):
    instance: str
    epoch: str
    seq: int
    role: str
    """One letter: ``e`` / ``s`` / ``x`` / ``t`` (:data:`ROLES` names them)."""
    attempt: int


def make(instance: str, epoch: str, seq: int, role: str, attempt: int) -> str:
    """The id of one attempt of one order of one position; ValueError past BingX's 40 characters."""
    head = f"{instance}-{epoch}-" if epoch else f"{instance}-"
    cid = f"{head}{seq}-{role}{attempt}"
    if len(cid) > MAX_LEN:
        raise ValueError(f"client order id {cid} would be {len(cid)} characters, over BingX's {MAX_LEN}")
    return cid


def parse(client_id: str) -> ClientId | None:
    """The parts of a gatebot id; None for anything else (an order placed by hand, another program)."""
    parts = client_id.split("-")
    if len(parts) == 3:
        instance, seq, tail = parts
        epoch = LEGACY
    elif len(parts) == 4:
        instance, epoch, seq, tail = parts
        if not _EPOCH.fullmatch(epoch):
            return None
    else:
        return None
    m = _TAIL.fullmatch(tail)
    if m is None or not seq.isdigit() or not _INSTANCE.fullmatch(instance):
        return None
    return ClientId(instance, epoch, int(seq), m.group(1), int(m.group(2)))


def instance_of(client_id: str) -> str:
    """The instance an id belongs to ("" for an id gatebot did not make): how events are routed."""
    p = parse(client_id)
    return p.instance if p is not None else ""


def role_of(client_id: str) -> Role | None:
    p = parse(client_id)
    return ROLES[p.role] if p is not None else None


def new_epoch(now_ms: int, rng: random.Random) -> str:
    """A new journal's epoch, from the injected clock and a random draw (a seeded one in a replay, so
    that the same inputs give the same journal)."""
    value = (now_ms // 1000 + rng.randrange(EPOCH_SPACE)) % EPOCH_SPACE
    out = ""
    for _ in range(EPOCH_LEN):
        value, digit = divmod(value, 36)
        out = _DIGITS[digit] + out
    return out


def is_epoch(text: str) -> bool:
    return text == LEGACY or _EPOCH.fullmatch(text) is not None
