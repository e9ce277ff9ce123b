"""A memory backend that can be slowed on demand, for the chaos tests' slow-step faults.

`SlowMemoryBackend` is the memory backend plus one option, `control`: a JSON file the test
writes, mapping a step ("open", "export") to {shard-name fragment or "*": seconds}. Each
open or export of a shard whose prefix contains the fragment sleeps that long first, so a
test can make one old shard answer its export pages late, a new shard open late, or every
hydration source copy slowly, then lift it by rewriting the file.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from memcluster.backends.memory import MemoryStoreBackend
from memcluster.model import Record


class SlowMemoryBackend(MemoryStoreBackend):
    """The memory backend, slowed by the `control` file (see the module docstring)."""

    name = "slow-memory"

    def open(self, opts: Mapping[str, Any]) -> None:
        opts = dict(opts)
        self._control = opts.pop("control", None)
        self._delay("open")
        super().open(opts)

    def export(self, *, cursor: str | None = None, limit: int = 1000
               ) -> tuple[list[Record], str | None]:
        self._delay("export")
        return super().export(cursor=cursor, limit=limit)

    def _delay(self, step: str) -> None:
        if not getattr(self, "_control", None):
            return
        try:
            with open(self._control, encoding="utf-8") as fh:
                rules = json.load(fh).get(step, {})
        except (OSError, ValueError):
            return
        seconds = max((float(s) for frag, s in rules.items()
                       if frag == "*" or frag in self.prefix), default=0.0)
        if seconds > 0:
            time.sleep(seconds)


def slow(control: str, **steps: Mapping[str, float]) -> None:
    """Write the control file: `slow(path, export={"cache/1": 3.0})`; no steps: all fast."""
    with open(control, "w", encoding="utf-8") as fh:
        json.dump(steps, fh)
