"""The PostgreSQL skip logic: skip locally, but FAIL when ``ENCLAVE_TEST_REQUIRE_POSTGRES=1``
(CI), so a missing or unreachable server can never pass as a green run."""

from __future__ import annotations

import pytest

from tests.store.conftest import DSN_ENV, REQUIRE_ENV, temporary_database

UNREACHABLE = "postgresql://postgres@127.0.0.1:1/none"


@pytest.mark.parametrize(
    ("dsn", "required", "outcome"),
    [
        (None, None, pytest.skip.Exception),
        (None, "1", pytest.fail.Exception),
        (UNREACHABLE, None, pytest.skip.Exception),
        (UNREACHABLE, "1", pytest.fail.Exception),
    ],
)
async def test_missing_postgres_skips_or_fails(
    monkeypatch: pytest.MonkeyPatch,
    dsn: str | None,
    required: str | None,
    outcome: type[BaseException],
) -> None:
    for name, value in ((DSN_ENV, dsn), (REQUIRE_ENV, required)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    with pytest.raises(outcome) as caught:
        async with temporary_database():
            pass
    if required:
        assert REQUIRE_ENV in str(caught.value)
