"""The schema, as numbered migrations written once for both databases.

``schema_version`` holds the highest migration applied. Each migration runs in one
transaction with the version bump (SQLite ``BEGIN IMMEDIATE``; PostgreSQL holding
``pg_advisory_xact_lock(MIGRATION_LOCK)``, so replicas starting at once apply it once), so a
crash leaves the schema at a whole version. Never edit a published migration; append one.
Versions are applied by number: the text of a published one may change only if the schema it
makes does not (``tests/store/test_schema.py`` compares a fresh store with a dump of the
schema as first published).

A statement is written once; the few types that differ are named in braces and filled in from
``TYPES`` (``migrations(db)``). ``Only(db, ...)`` holds the steps one database alone needs; a
Python step is an async function of a ``driver.Tx``, run in the same transaction.

Decisions:
- ledger amounts are 64-bit integer grid units (``ledger/grid.py``; migration 3 converted the
  earlier Decimal TEXT/NUMERIC, see ``ledger_migration.py``). SQLite sums them in Python (its
  ``SUM`` raises on 64-bit overflow), PostgreSQL with an exact ``SUM`` (``Dialect``).
- the audit table keeps epsilon/delta as doubles: the audit record carries floats, and a
  double round-trips exactly, so the stored record re-hashes to the stored hash. ``roles``
  and ``detail`` are TEXT holding the JSON we wrote, not ``jsonb`` (which rewrites numbers and
  key order).
- triggers make the audit table append-only for anyone using the database through SQL. That
  stops accidents, not an attacker with file access (who can drop them): the hash chain
  detects edits, and signed heads (``audit/signing.py``) detect a truncated or re-hashed tail.
- PostgreSQL's ``chain_head`` is a one-row table that every chained write locks
  (``SELECT ... FOR UPDATE``) before reading anything: one linear chain across replicas, and
  the budget re-check sees every earlier debit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from enclave.store import reserve
from enclave.store.driver import Migrations, Step
from enclave.store.ledger_migration import convert_ledger, fill_totals

Database = Literal["sqlite", "postgres"]
MIGRATION_LOCK = 0x656E636C  # "encl": PostgreSQL's advisory lock id for schema changes

#: The type names that differ; every other type is written as both databases spell it.
TYPES: dict[Database, dict[str, str]] = {
    "sqlite": {
        "BIGINT": "INTEGER",
        "DOUBLE": "REAL",
        "BOOL": "INTEGER",
        "NUMERIC": "TEXT",
        "SERIAL": "INTEGER",
    },
    "postgres": {
        "BIGINT": "BIGINT",
        "DOUBLE": "DOUBLE PRECISION",
        "BOOL": "BOOLEAN",
        "NUMERIC": "NUMERIC",
        "SERIAL": "BIGSERIAL",
    },
}


@dataclass(frozen=True)
class Only:
    """Steps that one database alone runs, at this place in the migration."""

    db: Database
    steps: tuple[Step, ...]


NEUTRAL: tuple[tuple[int, tuple[Step | Only, ...]], ...] = (
    (
        1,
        (
            """CREATE TABLE licences (
                id TEXT PRIMARY KEY,
                subject TEXT NOT NULL,
                organization TEXT NOT NULL,
                tier TEXT NOT NULL,
                datasets TEXT NOT NULL,
                purpose TEXT NOT NULL,
                jurisdiction TEXT NOT NULL,
                valid_from TEXT NOT NULL,
                valid_until TEXT NOT NULL,
                status TEXT NOT NULL CHECK (status IN ('active', 'suspended', 'revoked')),
                created_at TEXT,
                updated_at TEXT
            )""",
            "CREATE INDEX licences_subject ON licences (subject)",
            """CREATE TABLE audit (
                seq {BIGINT} PRIMARY KEY,
                ts TEXT NOT NULL,
                request_id TEXT NOT NULL,
                actor TEXT NOT NULL,
                roles TEXT NOT NULL,
                licence_id TEXT,
                tier TEXT,
                action TEXT NOT NULL,
                dataset TEXT,
                sql TEXT,
                epsilon {DOUBLE} NOT NULL,
                delta {DOUBLE} NOT NULL,
                cached {BOOL} NOT NULL,
                outcome TEXT NOT NULL,
                reason TEXT,
                client TEXT,
                result_sha256 TEXT,
                detail TEXT,
                prev_hash TEXT NOT NULL,
                hash TEXT NOT NULL
            )""",
            "CREATE INDEX audit_actor ON audit (actor, seq)",
            "CREATE INDEX audit_dataset ON audit (dataset, seq)",
            "CREATE INDEX audit_action ON audit (action, seq)",
            "CREATE INDEX audit_ts ON audit (ts)",
            "CREATE INDEX audit_licence ON audit (licence_id, seq)",
            Only(
                "sqlite",
                (
                    """CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
               BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END""",
                    """CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
               BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END""",
                ),
            ),
            Only(
                "postgres",
                (
                    """CREATE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
               BEGIN RAISE EXCEPTION 'audit records are append-only'; END $$""",
                    """CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE ON audit
               FOR EACH ROW EXECUTE FUNCTION audit_append_only()""",
                    """CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit
               FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only()""",
                    """CREATE TABLE chain_head (
                id INTEGER PRIMARY KEY CHECK (id = 1),
                seq BIGINT NOT NULL
            )""",
                    "INSERT INTO chain_head (id, seq) VALUES (1, 0)",
                ),
            ),
            """CREATE TABLE revocations (
                jti TEXT PRIMARY KEY,
                reason TEXT NOT NULL,
                created_at TEXT NOT NULL,
                audit_seq {BIGINT} NOT NULL REFERENCES audit (seq)
            )""",
            """CREATE TABLE policies (
                kind TEXT NOT NULL CHECK (kind IN ('tier', 'dataset')),
                name TEXT NOT NULL,
                version INTEGER NOT NULL,
                body TEXT NOT NULL,
                created_at TEXT NOT NULL,
                actor TEXT NOT NULL,
                audit_seq {BIGINT} REFERENCES audit (seq),
                PRIMARY KEY (kind, name, version)
            )""",
            """CREATE TABLE ledger (
                id {SERIAL} PRIMARY KEY,
                licence_id TEXT NOT NULL,
                dataset TEXT NOT NULL,
                epsilon {NUMERIC} NOT NULL,
                delta {NUMERIC} NOT NULL,
                ts TEXT NOT NULL,
                audit_seq {BIGINT} NOT NULL REFERENCES audit (seq)
            )""",
            "CREATE INDEX ledger_licence ON ledger (licence_id, dataset, ts)",
            "CREATE INDEX ledger_audit ON ledger (audit_seq)",
            """CREATE TABLE release_cache (
                licence_id TEXT NOT NULL,
                cache_key TEXT NOT NULL,
                body TEXT NOT NULL,
                created_at TEXT NOT NULL,
                audit_seq {BIGINT} NOT NULL REFERENCES audit (seq),
                PRIMARY KEY (licence_id, cache_key)
            )""",
        ),
    ),
    (
        2,
        (
            # Secrets every replica must share, e.g. the truncation seed (hex): see
            # ``shared_secret``. First writer wins; a value is never replaced.
            """CREATE TABLE shared_secrets (
                name TEXT PRIMARY KEY,
                value TEXT NOT NULL,
                created_at TEXT NOT NULL
            )""",
        ),
    ),
    (
        3,
        (
            # Ledger amounts as integer grid units (ledger/grid.py), old rows rounded up.
            "ALTER TABLE ledger ADD COLUMN epsilon_units {BIGINT} NOT NULL DEFAULT 0",
            "ALTER TABLE ledger ADD COLUMN delta_units {BIGINT} NOT NULL DEFAULT 0",
            convert_ledger,
            "ALTER TABLE ledger DROP COLUMN epsilon",
            "ALTER TABLE ledger DROP COLUMN delta",
        ),
    ),
    (
        4,
        (
            # Request counters of the rate limiter (``ops.count_hits``): one row per key and
            # fixed one-minute window, shared by every replica. Transient: old windows are
            # swept, and ``enclave store copy`` does not carry them.
            """CREATE TABLE rate_counters (
                key TEXT NOT NULL,
                win {BIGINT} NOT NULL,
                hits {BIGINT} NOT NULL,
                PRIMARY KEY (key, win)
            )""",
            "CREATE INDEX rate_counters_win ON rate_counters (win)",
        ),
    ),
    (
        5,
        (
            # Per-licence budget grants (top-ups), each stored with its audit record
            # (``store/grants.py``): the limit is the tier's budget plus the period's grants.
            """CREATE TABLE licence_grants (
                audit_seq {BIGINT} PRIMARY KEY REFERENCES audit (seq),
                licence_id TEXT NOT NULL,
                dataset TEXT NOT NULL,
                epsilon_units {BIGINT} NOT NULL,
                delta_units {BIGINT} NOT NULL,
                reason TEXT NOT NULL,
                actor TEXT NOT NULL,
                created_at TEXT NOT NULL
            )""",
            "CREATE INDEX licence_grants_licence ON licence_grants (licence_id, audit_seq)",
        ),
    ),
    (
        6,
        (
            # The durable job queue (``store/jobs.py``). Published with REAL and INTEGER on
            # both databases (a REAL is single precision on PostgreSQL: progress only).
            """CREATE TABLE jobs (
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        owner TEXT NOT NULL,
        licence_id TEXT NOT NULL,
        dataset TEXT NOT NULL,
        request_key TEXT NOT NULL,
        request TEXT NOT NULL,
        state TEXT NOT NULL,
        progress REAL NOT NULL DEFAULT 0,
        attempts INTEGER NOT NULL DEFAULT 0,
        claim TEXT,
        lease_until TEXT,
        result TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    )""",
            "CREATE INDEX jobs_claimable ON jobs (state, lease_until)",
            # one active job per licence and request: a repeat while it runs joins it
            "CREATE UNIQUE INDEX jobs_active_request ON jobs (licence_id, request_key)"
            " WHERE state IN ('queued', 'running')",
        ),
    ),
    (
        7,
        (
            # Four-eyes proposals (``store/proposals.py``): a change that raises risk, kept
            # until a second admin approves or rejects it, or it expires.
            """CREATE TABLE proposals (
                id TEXT PRIMARY KEY,
                kind TEXT NOT NULL,
                target TEXT NOT NULL,
                body TEXT NOT NULL,
                base TEXT NOT NULL,
                risks TEXT NOT NULL,
                reason TEXT NOT NULL,
                proposer TEXT NOT NULL,
                created_at TEXT NOT NULL,
                expires_at TEXT NOT NULL,
                status TEXT NOT NULL,
                decided_by TEXT,
                decided_reason TEXT,
                decided_at TEXT,
                audit_seq {BIGINT} NOT NULL REFERENCES audit (seq),
                decision_seq {BIGINT} REFERENCES audit (seq)
            )""",
            "CREATE INDEX proposals_status ON proposals (status, expires_at)",
            # Licences suspended with their organisation (``organisation.suspend``): only an
            # approved ``organisation.reactivate`` lifts the hold.
            """CREATE TABLE licence_holds (
                licence_id TEXT PRIMARY KEY,
                organisation TEXT NOT NULL,
                reason TEXT NOT NULL,
                audit_seq {BIGINT} NOT NULL REFERENCES audit (seq)
            )""",
            "CREATE INDEX licence_holds_organisation ON licence_holds (organisation)",
        ),
    ),
    (
        8,
        (
            # Layered budgets (``budget_layers.py``): each ledger row names the licence's
            # subject and organisation, so the subject and organisation layers are sums of
            # rows like the licence's; a grant has a layer (licence or subject) and names the
            # subject it tops up. Existing rows are filled from their licence.
            "ALTER TABLE ledger ADD COLUMN subject TEXT",
            "ALTER TABLE ledger ADD COLUMN organization TEXT",
            "UPDATE ledger SET"
            " subject = (SELECT l.subject FROM licences l WHERE l.id = ledger.licence_id),"
            " organization ="
            " (SELECT l.organization FROM licences l WHERE l.id = ledger.licence_id)",
            "CREATE INDEX ledger_subject ON ledger (subject, dataset, ts)",
            "CREATE INDEX ledger_organization ON ledger (organization, dataset, ts)",
            "CREATE INDEX ledger_dataset ON ledger (dataset, ts)",
            "ALTER TABLE licence_grants ADD COLUMN layer TEXT NOT NULL DEFAULT 'licence'",
            "ALTER TABLE licence_grants ADD COLUMN subject TEXT NOT NULL DEFAULT ''",
            "UPDATE licence_grants SET subject = COALESCE("
            "(SELECT l.subject FROM licences l WHERE l.id = licence_grants.licence_id), '')",
            "CREATE INDEX licence_grants_subject ON licence_grants (subject, layer, audit_seq)",
            # Running lifetime totals per layer key and dataset, kept by each debit in its
            # transaction (``ledger.add_totals``): a shared layer is one row to read, not a sum
            # over everyone's ledger rows under the chain lock.
            """CREATE TABLE ledger_totals (
                layer TEXT NOT NULL,
                key TEXT NOT NULL,
                dataset TEXT NOT NULL,
                epsilon_units {BIGINT} NOT NULL,
                delta_units {BIGINT} NOT NULL,
                PRIMARY KEY (layer, key, dataset)
            )""",
            fill_totals,
        ),
    ),
    # Budget reservations (``store/reserve.py``: one schema for both stores).
    (9, reserve.SCHEMA),
)


def migrations(db: Database) -> Migrations:
    """The migrations as ``db`` runs them: its types filled in, its ``Only`` steps kept."""

    def steps(items: tuple[Step | Only, ...]) -> tuple[Step, ...]:
        out: list[Step] = []
        for item in items:
            if isinstance(item, Only):
                out.extend(steps(item.steps) if item.db == db else ())
            else:
                out.append(item.format(**TYPES[db]) if isinstance(item, str) else item)
        return tuple(out)

    return tuple((version, steps(items)) for version, items in NEUTRAL)


SQLITE = migrations("sqlite")
POSTGRES = migrations("postgres")
SCHEMA_VERSION = NEUTRAL[-1][0]
