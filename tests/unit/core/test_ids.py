"""Client order ids (core/ids.py): one format, made and read in one place, within BingX's 40 characters."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

import pytest

from gatebot.core import ids
from gatebot.core.journal import SCHEMA_VERSION, Journal, JournalError


def test_ids_round_trip_with_and_without_an_epoch() -> None:
    assert ids.make("btc", "k3f9q", 2, "s", 1) == "btc-k3f9q-2-s1"
    assert ids.parse("btc-k3f9q-2-s1") == ids.ClientId("btc", "k3f9q", 2, "s", 1)
    assert ids.make("btc", ids.LEGACY, 2, "s", 1) == "btc-2-s1"  # a journal from before epochs: its old ids
    assert ids.parse("btc-2-s1") == ids.ClientId("btc", ids.LEGACY, 2, "s", 1)
    assert ids.instance_of("my_bot-00000-17-x3") == "my_bot" and ids.role_of("a-1-x3") == "close"


@pytest.mark.parametrize("text", ["", "btc", "btc-2", "btc-2-q1", "btc-x-s1", "btc-2-s", "BTC-2-s1", "btc-k3f9-2-s1",
                                  "btc-k3f9qq-2-s1", "a-b-c-d-e", "~17", "btc-2-s1-sl", "web_7f3a9c1d2e"])
def test_what_gatebot_did_not_make_is_not_read_as_its_id(text: str) -> None:
    assert ids.parse(text) is None and ids.instance_of(text) == ""


def test_the_longest_id_the_code_makes_fits_bingx_s_limit() -> None:
    longest = ids.make("a" * 20, "zzzzz", 9_999_999, "s", 9_999)  # the longest instance name config allows
    assert len(longest) == ids.MAX_LEN == 40
    assert ids.parse(longest) == ids.ClientId("a" * 20, "zzzzz", 9_999_999, "s", 9_999)
    with pytest.raises(ValueError, match="over BingX's 40"):
        ids.make("a" * 20, "zzzzz", 10_000_000, "s", 9_999)


def test_an_epoch_is_five_base36_characters_and_seeded_draws_repeat() -> None:
    a = ids.new_epoch(1_700_000_000_000, random.Random("btc:1"))
    assert a == ids.new_epoch(1_700_000_000_000, random.Random("btc:1"))  # a replay: the same inputs, the same
    assert len(a) == ids.EPOCH_LEN and ids.is_epoch(a) and a == a.lower()
    drawn = {ids.new_epoch(1_700_000_000_000, random.Random(i)) for i in range(200)}
    assert len(drawn) == 200, "journals made at the same second still get different epochs"


def test_a_new_journal_keeps_its_epoch_and_an_old_one_is_migrated_to_the_legacy_epoch(tmp_path: Path) -> None:
    j = Journal(tmp_path / "new.sqlite", epoch="k3f9q")
    j.close()
    assert Journal(tmp_path / "new.sqlite", epoch="other").epoch == "k3f9q", "the epoch is given once, at creation"
    old = tmp_path / "old.sqlite"
    Journal(old).close()
    conn = sqlite3.connect(old)  # as a version 1 journal was: no epoch
    conn.execute("DELETE FROM meta WHERE key = 'epoch'")
    conn.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    assert Journal(old, readonly=True).epoch == ids.LEGACY
    j = Journal(old)
    assert j.epoch == ids.LEGACY and j.meta()["schema_version"] == str(SCHEMA_VERSION) and j.meta()["epoch"] == ""
    j.close()


def test_a_zero_byte_journal_is_damaged_never_a_new_one(tmp_path: Path) -> None:
    path = tmp_path / "kt.sqlite"
    path.write_bytes(b"")
    with pytest.raises(JournalError, match=r"kt.sqlite is damaged: 0 bytes and no tables"):
        Journal(path)
    assert path.read_bytes() == b"", "nothing was written into it"
