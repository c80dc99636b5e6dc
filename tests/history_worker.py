"""Child process for tests/test_history_durability.py: screens a batch and saves each result to the history.

``python -m tests.history_worker BUNDLE DB COUNT SEED [STALL_AT]`` from the project root. As the page does,
it saves the results under a case (sample ``BATCH-<SEED>``, saved with its first result). After each
committed result it prints the saved row as one JSON line (flushed), so the parent knows exactly
what was committed when it kills this process with SIGKILL. With STALL_AT, the STALL_AT-th insert of a
result runs and then the process waits inside that open transaction (it prints ``{"stalled": ...}``):
the parent's kill then lands mid-transaction, deterministically.
"""

from __future__ import annotations

import functools
import io
import json
import sqlite3
import sys
import time
from pathlib import Path

from edge_app.cases import CaseInfo
from edge_app.records import History, now
from edge_app.screening import Screener
from tests.factories import smear_like


class StallingConnection(sqlite3.Connection):
    """Runs the chosen INSERT of a result, says so, then waits forever with its transaction open."""

    inserts = 0
    stall_at = 0

    def execute(self, sql: str, *args):
        cursor = super().execute(sql, *args)
        if " ".join(sql.split()).upper().startswith("INSERT INTO RESULTS"):
            StallingConnection.inserts += 1
            if StallingConnection.inserts == StallingConnection.stall_at:
                print(json.dumps({"stalled": StallingConnection.inserts, "in_transaction": self.in_transaction}),
                      flush=True)  # fmt: skip
                time.sleep(3600)
        return cursor


def main() -> int:
    bundle, db, count, seed = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    if len(sys.argv) > 5:
        StallingConnection.stall_at = int(sys.argv[5])
        sqlite3.connect = functools.partial(sqlite3.connect, factory=StallingConnection)  # type: ignore[assignment]
    screener = Screener(bundle, num_threads=1)
    history = History(db)
    print(json.dumps({"ready": history.available, "warning": history.warning}), flush=True)
    case = CaseInfo(f"BATCH-{seed}", operator="history worker")
    for index in range(count):
        buffer = io.BytesIO()
        smear_like(seed + index, (150 - index % 40, 60, 160), 5 + index % 5, 96).save(buffer, format="PNG")
        result = screener.screen_bytes(buffer.getvalue(), f"batch-{seed}-{index:04d}.png")
        when = now()
        if case.case_id is None:
            history.open_case(case)
        row_id = history.add(result, when, case_id=case.case_id)
        print(json.dumps({"id": row_id, "time": when, "result": result.as_dict()}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
