"""Every benchmark's ``--smoke`` mode runs end to end, so ``bench/`` never rots.

Each script runs as ``python -m bench.<name> --smoke`` in a subprocess (a real ``enclave serve``
where the benchmark uses one), with its work folder and results file in ``tmp_path``. The test
checks the exit status and that the script wrote its own section of the results file with a
table; it asserts nothing about timings. SmartNoise runs only if its virtual environment
(``bench/out/snvenv``) already exists: creating it needs network installs.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
SNVENV = REPO / "bench" / "out" / "snvenv"

CASES: list[Any] = [
    ("latency", "Latency: gateway vs raw DuckDB", []),
    ("throughput", "Throughput: concurrent small queries", []),
    ("appends", "Audit appends: concurrent writers on one store", []),
    pytest.param(
        "throughput",
        "Throughput: replicas on one PostgreSQL",  # section throughput-replicas
        ["--replicas", "2"],
        id="throughput-replicas",
    ),
    ("audit", "Audit chain: verify and export", []),
    ("memory", "Memory: peak RSS of the gateway", []),
    ("flood", "Flood: refused SQL against another user", []),
    ("timing", "Timing: data read to release", []),
    ("reserve", "Budget reservations: store cost", []),
    ("accuracy_search", "Accuracy targets: CPU per request", []),
    pytest.param(
        "smartnoise",
        "Against SmartNoise SQL",
        ["--venv", str(SNVENV)],
        marks=pytest.mark.skipif(
            not (SNVENV / "bin" / "python").exists(),
            reason="smartnoise venv absent (python -m bench.smartnoise creates it; needs PyPI)",
        ),
    ),
]


@pytest.mark.slow
@pytest.mark.parametrize(("name", "title", "extra"), CASES)
def test_benchmark_smoke_mode_runs(tmp_path: Path, name: str, title: str, extra: list[str]) -> None:
    results = tmp_path / "RESULTS.md"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENCLAVE_")}
    if "ENCLAVE_TEST_POSTGRES_DSN" in os.environ:
        env["ENCLAVE_TEST_POSTGRES_DSN"] = os.environ["ENCLAVE_TEST_POSTGRES_DSN"]
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            f"bench.{name}",
            "--smoke",
            "--out",
            str(tmp_path / "out"),
            "--results",
            str(results),
            *extra,
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = results.read_text()
    assert f"<!-- bench:{name}" in text and f"<!-- /bench:{name}" in text  # name or name-...
    assert f"## {title}" in text
    headers = ("| rows |", "| store |", "| step |", "| phase |", "| shape |")
    assert any(header in text for header in headers)
    # the section says which machine and versions the numbers are from
    assert "cores" in text and "duckdb" in text and "opendp" in text
