"""Processes sharing one state folder (``server.processes`` > 1) bound a version once.

Real processes (``spawn``): one waits on the per-version lock while another holds it, then
reuses the file it finds instead of bounding again; several started together all end with the
same file, and no work folder is left behind.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import time
from pathlib import Path

import pytest

from enclave.engine.bounding import (
    WORK_DIR,
    bound_dataset,
    bounded_target,
    load_or_create_key,
    preparation_lock,
)
from tests.engine.test_bounding import make_spec, read, write_source

CTX = multiprocessing.get_context("spawn")


@pytest.fixture
def source(tmp_path: Path) -> Path:
    return write_source(tmp_path / "src.parquet")


def _bound_in_child(src: str, state: str, key: bytes, out: multiprocessing.Queue[str]) -> None:
    target = bound_dataset(make_spec(Path(src)), Path(state), key=key, threads=1)
    out.put(str(target.path))


def test_a_second_process_waits_for_the_lock_and_reuses_the_file(
    tmp_path: Path, source: Path
) -> None:
    state = tmp_path / "state"
    key = load_or_create_key(state)
    spec = make_spec(source)
    target = bounded_target(spec, state, key)
    out: multiprocessing.Queue[str] = CTX.Queue()
    with preparation_lock(state, target):
        child = CTX.Process(target=_bound_in_child, args=(str(source), str(state), key, out))
        child.start()
        time.sleep(3.0)  # ample for a spawned child to import and reach the lock
        assert child.is_alive()
        assert not target.path.exists()  # it is waiting, not bounding
        # the "other process" finishes: its file appears while the lock is held
        elsewhere = bound_dataset(spec, tmp_path / "other", key=key, threads=1)
        target.path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(elsewhere.path, target.path)
        placed = os.stat(target.path).st_ino
    child.join(timeout=60)
    assert child.exitcode == 0
    assert out.get(timeout=5) == str(target.path)
    assert os.stat(target.path).st_ino == placed  # reused, not bounded again and renamed over
    assert not [p for p in (state / WORK_DIR).iterdir() if p.is_dir()]


def test_processes_started_together_end_with_one_file(tmp_path: Path, source: Path) -> None:
    state = tmp_path / "state"
    key = load_or_create_key(state)
    out: multiprocessing.Queue[str] = CTX.Queue()
    children = [
        CTX.Process(target=_bound_in_child, args=(str(source), str(state), key, out))
        for _ in range(3)
    ]
    for child in children:
        child.start()
    for child in children:
        child.join(timeout=120)
        assert child.exitcode == 0
    paths = {out.get(timeout=5) for _ in children}
    target = bounded_target(make_spec(source), state, key)
    assert paths == {str(target.path)}
    assert read(target.path) == read(bound_dataset(make_spec(source), tmp_path / "b", key=key).path)
    assert not [p for p in (state / WORK_DIR).iterdir() if p.is_dir()]
