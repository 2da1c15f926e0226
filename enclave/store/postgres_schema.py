"""PostgreSQL schema, as numbered migrations (the same tables as ``sqlite_schema.py``).

Migrations run in one transaction holding ``pg_advisory_xact_lock(MIGRATION_LOCK)``, so
several replicas can start at once: the first applies them, the others wait and then find
nothing left to do.

Differences from SQLite, and why:
- ``chain_head`` is a one-row table. Every audited write locks it (``SELECT … FOR UPDATE``)
  before reading anything, which serializes appends across replicas: one linear chain, and the
  budget re-check sees every earlier debit. Row locks are released at commit or rollback.
- ledger amounts are ``BIGINT`` grid units (``ledger/grid.py``; migration 3 converted the
  earlier ``NUMERIC``, see ``ledger_migration.py``), summed by ``SUM`` into an exact
  ``numeric``; audit epsilon/delta ``double precision`` (the record carries floats and a double
  round-trips exactly, so stored records re-hash correctly).
- a migration step is a statement or an async function of a ``driver.Tx``.
- ``roles`` and ``detail`` are TEXT holding the JSON we wrote, not ``jsonb``: ``jsonb``
  rewrites numbers and key order, and the stored record must hash to its stored hash.
"""

from __future__ import annotations

from enclave.store import jobs, reserve
from enclave.store.driver import Step
from enclave.store.ledger_migration import convert_postgres, fill_totals

MIGRATION_LOCK = 0x656E636C  # "encl": the advisory lock id for schema changes

MIGRATIONS: tuple[tuple[int, tuple[Step, ...]], ...] = (
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
                seq BIGINT PRIMARY KEY,
                ts TEXT NOT NULL,
                request_id TEXT NOT NULL,
                actor TEXT NOT NULL,
                roles TEXT NOT NULL,
                licence_id TEXT,
                tier TEXT,
                action TEXT NOT NULL,
                dataset TEXT,
                sql TEXT,
                epsilon DOUBLE PRECISION NOT NULL,
                delta DOUBLE PRECISION NOT NULL,
                cached BOOLEAN NOT NULL,
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
            """CREATE TABLE revocations (
                jti TEXT PRIMARY KEY,
                reason TEXT NOT NULL,
                created_at TEXT NOT NULL,
                audit_seq BIGINT NOT NULL REFERENCES audit (seq)
            )""",
            """CREATE TABLE policies (
                kind TEXT NOT NULL CHECK (kind IN ('tier', 'dataset')),
                name TEXT NOT NULL,
                version INTEGER NOT NULL,
                body TEXT NOT NULL,
                created_at TEXT NOT NULL,
                actor TEXT NOT NULL,
                audit_seq BIGINT REFERENCES audit (seq),
                PRIMARY KEY (kind, name, version)
            )""",
            """CREATE TABLE ledger (
                id BIGSERIAL PRIMARY KEY,
                licence_id TEXT NOT NULL,
                dataset TEXT NOT NULL,
                epsilon NUMERIC NOT NULL,
                delta NUMERIC NOT NULL,
                ts TEXT NOT NULL,
                audit_seq BIGINT NOT NULL REFERENCES audit (seq)
            )""",
            "CREATE INDEX ledger_licence ON ledger (licence_id, dataset, ts)",
            "CREATE INDEX ledger_audit ON ledger (audit_seq)",
            """CREATE TABLE release_cache (
                licence_id TEXT NOT NULL,
                cache_key TEXT NOT NULL,
                body TEXT NOT NULL,
                created_at TEXT NOT NULL,
                audit_seq BIGINT NOT NULL REFERENCES audit (seq),
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
            "ALTER TABLE ledger ADD COLUMN epsilon_units BIGINT NOT NULL DEFAULT 0",
            "ALTER TABLE ledger ADD COLUMN delta_units BIGINT NOT NULL DEFAULT 0",
            convert_postgres,
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
                win BIGINT NOT NULL,
                hits BIGINT NOT NULL,
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
                audit_seq BIGINT PRIMARY KEY REFERENCES audit (seq),
                licence_id TEXT NOT NULL,
                dataset TEXT NOT NULL,
                epsilon_units BIGINT NOT NULL,
                delta_units BIGINT NOT NULL,
                reason TEXT NOT NULL,
                actor TEXT NOT NULL,
                created_at TEXT NOT NULL
            )""",
            "CREATE INDEX licence_grants_licence ON licence_grants (licence_id, audit_seq)",
        ),
    ),
    # The durable job queue (``store/jobs.py``: one schema and one SQL text for both stores).
    (6, jobs.SCHEMA),
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
                audit_seq BIGINT NOT NULL REFERENCES audit (seq),
                decision_seq BIGINT REFERENCES audit (seq)
            )""",
            "CREATE INDEX proposals_status ON proposals (status, expires_at)",
            # Licences suspended with their organisation (``organisation.suspend``): only an
            # approved ``organisation.reactivate`` lifts the hold.
            """CREATE TABLE licence_holds (
                licence_id TEXT PRIMARY KEY,
                organisation TEXT NOT NULL,
                reason TEXT NOT NULL,
                audit_seq BIGINT NOT NULL REFERENCES audit (seq)
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
            # transaction (``ops.add_totals``): a shared layer is one row to read, not a sum
            # over everyone's ledger rows under the chain lock.
            """CREATE TABLE ledger_totals (
                layer TEXT NOT NULL,
                key TEXT NOT NULL,
                dataset TEXT NOT NULL,
                epsilon_units BIGINT NOT NULL,
                delta_units BIGINT NOT NULL,
                PRIMARY KEY (layer, key, dataset)
            )""",
            fill_totals,
        ),
    ),
    # Budget reservations (``store/reserve.py``: one schema for both stores).
    (9, reserve.SCHEMA),
)

SCHEMA_VERSION = MIGRATIONS[-1][0]
