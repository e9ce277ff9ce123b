"""Crash safety: a writer killed with SIGKILL loses no acknowledged write and leaves a
readable store (files in msgpack and json, sqlite); the files lock keeps a second opener out.

A child process stores key after key and prints each key once `store()` has returned. The
test kills it after a random number of acknowledgements (seeded by MEMCLUSTER_TEST_SEED),
reopens the store and checks every acknowledged key and value.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys

import pytest

from memcluster.backends.registry import create_backend
from memcluster.errors import SourceUnavailable
from memcluster.model import Query
from memcluster.ops import CountOp, RetrieveOp

WRITER = """
import json, sys
from memcluster.backends.registry import create_backend
from memcluster.ops import StoreOp
backend = create_backend(sys.argv[1], json.loads(sys.argv[2]), prefix="crash")
print("ready", flush=True)
i = 0
while True:
    key = f"k{i:06d}"
    backend.store(StoreOp.make(key, {"i": i, "pad": "x" * (i % 500)}, metadata={"i": i}))
    print(key, flush=True)
    i += 1
"""

CASES = [
    ("files", {"format": "msgpack"}, "m.msgpack"),
    ("files", {"format": "json"}, "m.json"),
    ("sqlite", {}, "m.db"),
]


def _value(i: int) -> dict:
    return {"i": i, "pad": "x" * (i % 500)}


@pytest.mark.parametrize("backend_name, opts, filename", CASES,
                         ids=[f"{c[0]}-{c[2]}" for c in CASES])
def test_sigkill_loses_no_acknowledged_write(tmp_path, backend_name, opts, filename):
    seed = int(os.environ.get("MEMCLUSTER_TEST_SEED", "0"))
    kill_after = random.Random(f"{seed}-{backend_name}-{filename}").randrange(40, 160)
    opts = {**opts, "path": str(tmp_path / filename)}
    proc = subprocess.Popen([sys.executable, "-c", WRITER, backend_name, json.dumps(opts)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    acked: list[str] = []
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line == "ready", f"writer failed to start: {proc.stderr.read()}"  # type: ignore[union-attr]
        if backend_name == "files":  # the lock keeps a second process out while it runs
            with pytest.raises(SourceUnavailable, match="already open"):
                create_backend(backend_name, opts, prefix="crash")
        while len(acked) < kill_after:
            line = proc.stdout.readline()
            if not line:
                pytest.fail(f"writer died early: {proc.stderr.read()}")  # type: ignore[union-attr]
            acked.append(line.strip())
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        proc.stdout.close()  # type: ignore[union-attr]
        proc.stderr.close()  # type: ignore[union-attr]
    assert proc.returncode == -signal.SIGKILL

    backend = create_backend(backend_name, opts, prefix="crash")
    try:
        for key in acked:
            record = backend.retrieve(RetrieveOp.make(key))
            assert record is not None, f"acknowledged {key} lost (seed {seed})"
            assert record.value == _value(int(key[1:])) and record.version == 1
        total = backend.count(CountOp.make(Query(pattern="k*")))
        assert total in (len(acked), len(acked) + 1)  # at most the one write in flight
    finally:
        backend.close()
