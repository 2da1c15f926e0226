"""The audit chain as stored: it verifies, filters, streams, resists tampering through raw
SQL, and fails closed (``AuditUnavailable``, nothing written) when it cannot be written."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from enclave.audit.chain import chain_hash, verify
from enclave.audit.export import stream_jsonl, verify_export
from enclave.audit.log import AuditFilter
from enclave.audit.record import GENESIS_HASH
from enclave.audit.signing import HeadSigner
from enclave.errors import AuditUnavailable, StoreUnavailable
from enclave.ledger.charge import CacheEntry
from enclave.ledger.grid import Amount
from enclave.models import parse_time
from tests.store.conftest import charge, draft, licence

_KEY = Ed25519PrivateKey.generate()


async def _fill(store: Any, n: int) -> None:
    for i in range(n):
        text = "SELECT COUNT(*) FROM visits -- ünïcode " + str(i)  # noqa: S608
        await store.append(draft(sql=text, epsilon=0.01))


async def _verify(store: Any) -> Any:
    return verify([r async for r in store.audit_iter(batch=7)])


async def test_chain_of_many_appends_verifies(store: Any) -> None:
    assert await store.audit_head() == (0, GENESIS_HASH)
    await _fill(store, 120)
    records = [r async for r in store.audit_iter(batch=50)]
    assert [r.seq for r in records] == list(range(1, 121))
    assert records[0].prev_hash == GENESIS_HASH
    result = verify(records)
    assert result.valid and result.count == 120
    assert (120, result.head) == await store.audit_head()
    # Records come back exactly as appended, and JSON export re-verifies.
    assert verify([r.to_json() for r in records]).valid
    stamps = [parse_time(r.ts) for r in records]
    assert stamps == sorted(stamps)
    assert records[0].ts.endswith("Z") and len(records[0].ts) == 24


async def test_record_fields_roundtrip(store: Any) -> None:
    d = draft(
        action="query",
        licence_id="lic_1",
        tier="standard",
        epsilon=0.5,
        delta=1e-7,
        cached=False,
        reason=None,
        client="203.0.113.7",
        result_sha256="ab" * 32,
        detail={"b": [1, 2], "a": {"z": None}},
        roles=("researcher", "auditor"),
    )
    appended = await store.append(d)
    (stored,) = await store.audit_events(AuditFilter())
    assert stored == appended
    assert stored.roles == ["researcher", "auditor"] and stored.delta == 1e-7
    assert stored.hash == chain_hash(GENESIS_HASH, stored.to_json())


async def test_audit_events_filters_and_pages(store: Any, backend: Any) -> None:
    await store.insert_licence(licence(), draft("licence.create", actor="root", dataset=None))
    start = backend.clock.now
    await store.append(draft(licence_id="lic_1"))
    backend.clock.advance(hours=1)
    await store.append(draft(actor="bob", dataset="labs", outcome="denied"))
    backend.clock.advance(hours=1)
    await store.append(draft(action="query.estimate", licence_id="lic_1"))

    async def seqs(after: int = 0, limit: int = 100, **kw: Any) -> list[int]:
        return [r.seq for r in await store.audit_events(AuditFilter(**kw), after, limit)]

    assert await seqs() == [1, 2, 3, 4]
    assert await seqs(actor="alice") == [2, 4]
    assert await seqs(dataset="labs") == [3]
    assert await seqs(action="licence.create") == [1]
    assert await seqs(outcome="denied") == [3]
    assert await seqs(licence_id="lic_1") == [1, 2, 4]
    assert await seqs(since=start + dt.timedelta(minutes=30)) == [3, 4]
    assert await seqs(until=start + dt.timedelta(minutes=30)) == [1, 2]
    assert await seqs(
        since=start + dt.timedelta(minutes=30), until=start + dt.timedelta(hours=1, minutes=30)
    ) == [3]
    assert await seqs(after=1, limit=2) == [2, 3]
    assert await seqs(after=3, limit=2) == [4]
    assert await seqs(actor="alice", action="query") == [2]


async def test_audit_is_append_only_through_sql(store: Any, backend: Any) -> None:
    await _fill(store, 3)
    for sql in (
        "UPDATE audit SET actor = 'mallory' WHERE seq = 2",
        "DELETE FROM audit WHERE seq = 3",
    ):
        with pytest.raises(Exception, match="append-only"):
            await backend.raw(sql)
    assert (await _verify(store)).valid


@pytest.mark.parametrize(
    ("attack", "first_bad"),
    [
        (["UPDATE audit SET actor = 'mallory' WHERE seq = 4"], 4),
        (["UPDATE audit SET epsilon = 0.001 WHERE seq = 6"], 6),
        (["DELETE FROM audit WHERE seq = 5"], 5),
        # swap two records (through a free seq, as unique keys are checked row by row)
        (
            [
                "UPDATE audit SET seq = -3 WHERE seq = 3",
                "UPDATE audit SET seq = 3 WHERE seq = 4",
                "UPDATE audit SET seq = 4 WHERE seq = -3",
            ],
            3,
        ),
        # a forged record with a made-up hash at the end
        (
            [
                "INSERT INTO audit SELECT 9, ts, request_id, 'mallory', roles, licence_id, tier,"
                " action, dataset, sql, epsilon, delta, cached, outcome, reason, client,"
                " result_sha256, detail, hash, prev_hash FROM audit WHERE seq = 8"
            ],
            9,
        ),
    ],
    ids=["edit-actor", "edit-epsilon", "delete", "swap", "forge-tail"],
)
async def test_tampering_is_detected(
    store: Any, backend: Any, attack: list[str], first_bad: int
) -> None:
    await _fill(store, 8)
    await backend.guards_off()
    for sql in attack:
        await backend.raw(sql)
    result = await _verify(store)
    assert not result.valid and result.first_bad_seq == first_bad
    assert result.count == first_bad - 1


async def test_forged_insert_with_correct_hash_breaks_the_next_link(
    store: Any, backend: Any
) -> None:
    """The strongest insertion: shift the tail up, insert a correctly hashed record at seq 4.
    The original record now at seq 5 still names the old predecessor."""
    await _fill(store, 6)
    records = [r async for r in store.audit_iter()]
    await backend.guards_off()
    for seq in range(6, 3, -1):
        await backend.raw(f"UPDATE audit SET seq = {seq + 1} WHERE seq = {seq}")  # noqa: S608
    forged = {**records[3].to_json(), "seq": 4, "actor": "mallory", "prev_hash": records[2].hash}
    forged["hash"] = chain_hash(records[2].hash, forged)
    columns = (
        "4, ts, request_id, 'mallory', roles, licence_id, tier, action, dataset, sql, epsilon,"
        " delta, cached, outcome, reason, client, result_sha256, detail"
    )
    hashes = f"'{records[2].hash}', '{forged['hash']}'"
    await backend.raw(
        "INSERT INTO audit SELECT " + columns + ", " + hashes + " FROM audit WHERE seq = 5"  # noqa: S608
    )
    result = await _verify(store)
    assert not result.valid and result.first_bad_seq == 5
    assert "prev_hash" in (result.reason or "")


async def test_truncated_tail_is_not_detectable_by_the_chain_alone(
    store: Any, backend: Any
) -> None:
    """Documented limitation: a chain without a key cannot tell a truncated log from a
    shorter one. Signed heads (a later task) close this gap."""
    await _fill(store, 6)
    await backend.guards_off()
    await backend.raw("DELETE FROM audit WHERE seq > 4")
    result = await _verify(store)
    assert result.valid and result.count == 4


async def test_audit_failure_is_audit_unavailable_and_writes_nothing(
    store: Any, backend: Any
) -> None:
    await store.insert_licence(licence(), draft("licence.create"))
    await store.debit(draft(), charge("0.5", "1.0"))
    head = await store.audit_head()
    await backend.break_audit()
    attempts = [
        store.debit(draft(), charge("0.25", "1.0"), CacheEntry("lic_1", "k", {"rows": []})),
        store.insert_licence(licence("lic_2", datasets=("labs",)), draft("licence.create")),
        store.update_licence("lic_1", {"status": "suspended"}, draft("licence.update")),
        store.add_revocation("jti-9", "lost", draft("revocation.create")),
        store.put_policy("tier", "standard", {"name": "standard"}, "root", draft("tier.update")),
    ]
    for attempt in attempts:
        with pytest.raises(AuditUnavailable) as info:
            await attempt
        assert "disk on fire" not in str(info.value.detail)
    assert await store.audit_head() == head
    assert await store.spent("lic_1", "visits", None) == Amount.charge("0.5", 0)
    assert await store.get_cached("lic_1", "k") is None
    assert await store.get_licence("lic_2") is None
    assert (await store.get_licence("lic_1")).status == "active"
    assert not await store.is_revoked("jti-9")
    assert await store.get_policy("tier", "standard") is None
    # The store recovers as soon as the audit table can be written again.
    await backend.repair_audit()
    record = (await store.debit(draft(), charge("0.25", "1.0"))).record
    assert record.seq == head[0] + 1 and (await _verify(store)).valid


async def test_unreadable_store_is_store_unavailable(store: Any, backend: Any) -> None:
    await store.insert_licence(licence(), draft("licence.create"))
    await backend.raw("ALTER TABLE licences RENAME TO licences_gone")
    with pytest.raises(StoreUnavailable) as info:
        await store.get_licence("lic_1")
    assert "licences" not in info.value.detail
    await backend.raw("ALTER TABLE licences_gone RENAME TO licences")
    assert (await store.get_licence("lic_1")) is not None


async def test_closed_store_refuses(backend: Any) -> None:
    s = backend.make()
    await s.open()
    await s.close()
    with pytest.raises(StoreUnavailable):
        await s.ping()
    with pytest.raises(AuditUnavailable):
        await s.append(draft())


async def test_time_bounds_finer_than_a_millisecond_keep_every_record_in_its_window(
    store: Any, backend: Any
) -> None:
    """Record times are kept to the millisecond; a bound given to the microsecond still puts
    each record on the side of it that its time says (``until`` exclusive), so adjacent
    windows neither drop nor repeat a record."""
    backend.clock.now = dt.datetime(2026, 3, 1, 12, 0, 0, 71000, tzinfo=dt.UTC)
    await store.append(draft())
    (record,) = await store.audit_events(AuditFilter())
    assert record.ts == "2026-03-01T12:00:00.071Z"
    bound = backend.clock.now + dt.timedelta(microseconds=500)  # after the record's time

    async def seqs(**kw: Any) -> list[int]:
        return [r.seq for r in await store.audit_events(AuditFilter(**kw))]

    assert await seqs(until=bound) == [1]
    assert await seqs(since=bound) == []
    rows = await store.audit_summary(since=bound)
    assert rows == []


async def test_a_flag_stored_as_text_fails_verification(store: Any, backend: Any) -> None:
    """``cached`` is a boolean: a cell rewritten to text SQL reads otherwise (SQLite reads
    ``'false'`` as 0, Python as true) would let the summary count a cache hit as a fresh
    release while the chain still verified. Any value but a boolean (0/1) breaks the chain."""
    if backend.name != "sqlite":
        pytest.skip("a PostgreSQL BOOLEAN column holds only booleans")
    for i in range(3):
        await store.append(draft(cached=i == 1))
    await backend.guards_off()
    await backend.raw("UPDATE audit SET cached = 'false' WHERE seq = 2")
    assert (await store.audit_summary())[0].cache_hits == 0  # SQL reads it as not cached
    result = await _verify(store)
    assert (result.valid, result.first_bad_seq) == (False, 2)
    stored, _ = await store.audit_verify(None, None, -1, 100_000)
    assert (stored.valid, stored.first_bad_seq) == (False, 2)
    (record,) = await store.audit_events(AuditFilter(), 1, 1)
    assert record.cached == "false"  # shown as stored, not as a boolean it is not
    lines = [line async for line in stream_jsonl(store, None, HeadSigner(_KEY).sign)]
    offline = verify_export(b"".join(lines).splitlines())
    assert (offline.result.valid, offline.result.first_bad_seq) == (False, 2)
