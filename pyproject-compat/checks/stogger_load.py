#!/usr/bin/env python3
"""Drive stogger's PostgreSQL target at a fixed rate (for benches/stogger_ddl.rs).

Needs a Python with stogger and stogger-postgres installed (stogger-postgres from
stogger's repository; it is not on PyPI) and psycopg 3.

Usage:
    python stogger_load.py DSN TABLE RATE_PER_SEC SECONDS [--bound]

By default every call goes through structlog's lazy proxy (``structlog.get_logger()``),
which is how stogger is normally used; with that, stogger-postgres opens a new
connection and re-runs its CREATE TABLE / CREATE INDEX statements on every call.
``--bound`` logs through one ``.bind()``-ed logger instead (one connection, DDL once).

stogger-postgres swallows its own errors and only prints a line to stderr
("stogger-postgres: ... failed ..."). This script counts those lines (and any
exception escaping a log call) as the failures it knows about.
"""

import os
import sys
import time
import uuid


class _CountingStderr:
    """Pass-through stderr wrapper that counts stogger failure notices."""

    MARKERS = ("stogger-postgres:", "stogger:")

    def __init__(self, inner):
        self.inner = inner
        self.failures = 0
        self.kinds: dict[str, int] = {}
        self._buf = ""

    def write(self, s):
        self._buf += s
        while "\n" in self._buf:
            line, self._buf = self._buf.split("\n", 1)
            if line.startswith(self.MARKERS):
                self.failures += 1
                self.kinds[line] = self.kinds.get(line, 0) + 1
        return self.inner.write(s)

    def flush(self):
        self.inner.flush()

    def __getattr__(self, name):
        return getattr(self.inner, name)


def main(argv):
    args = [a for a in argv[1:] if not a.startswith("--")]
    bound = "--bound" in argv
    if len(args) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    dsn, table, rate, seconds = args[0], args[1], float(args[2]), float(args[3])
    if rate <= 0 or seconds <= 0:
        print("RATE_PER_SEC and SECONDS must be > 0", file=sys.stderr)
        return 2

    # Configure stogger through its environment overrides (they win over pyproject.toml).
    os.environ["STOGGER_ENABLE_POSTGRES"] = "1"
    os.environ["STOGGER_POSTGRES_DSN"] = dsn
    os.environ["STOGGER_POSTGRES_TABLE"] = table

    # The adapter: psycopg 3 cannot send a Python dict by default; stogger-postgres
    # passes the `data` column as a dict. Dump dicts as jsonb.
    import psycopg
    import psycopg.sql
    from psycopg.types.json import JsonbDumper

    psycopg.adapters.register_dumper(dict, JsonbDumper)

    import structlog
    import stogger

    stogger.init_logging(systemd=stogger.SystemdMode.OFF, log_to_console=False)

    counter = _CountingStderr(sys.stderr)
    sys.stderr = counter

    log = structlog.get_logger().bind(load_mode="bound") if bound else structlog.get_logger()

    run_id = uuid.uuid4().hex
    total = int(round(rate * seconds))
    interval = 1.0 / rate
    raised = 0
    latencies = []
    t0 = time.monotonic()
    for i in range(total):
        due = t0 + i * interval
        now = time.monotonic()
        if due > now:
            time.sleep(due - now)
        start = time.monotonic()
        try:
            log.info("load-event", seq=i, rate=rate, run_id=run_id)
        except Exception as exc:  # a log call that raises is a known failure too
            raised += 1
            print(f"load.py: log call {i} raised {type(exc).__name__}: {exc}", file=sys.__stderr__)
        latencies.append(time.monotonic() - start)
    elapsed = time.monotonic() - t0

    sys.stderr = counter.inner
    latencies.sort()

    def pct(p):
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000

    print(f"mode: {'bound logger' if bound else 'lazy proxy (stogger default usage)'}")
    print(f"calls made: {total}")
    print(f"known failures: {counter.failures + raised}"
          f" (stogger stderr notices: {counter.failures}, exceptions raised: {raised})")
    for line, n in sorted(counter.kinds.items()):
        print(f"  {n} x {line}")
    print(f"elapsed: {elapsed:.2f}s, achieved rate: {total / elapsed:.1f}/s")
    try:  # cross-check: rows that really arrived (separate connection, not via stogger)
        with psycopg.connect(dsn, autocommit=True) as conn:
            q = psycopg.sql.SQL("SELECT count(*) FROM {} WHERE data->>'run_id' = %s").format(
                psycopg.sql.Identifier(table))
            rows = conn.execute(q, [run_id]).fetchone()[0]
        print(f"rows found in {table} for run_id {run_id}: {rows} (missing: {total - rows})")
    except Exception as exc:
        print(f"row cross-check not possible: {type(exc).__name__}: {exc}")
    print(f"call latency ms: p50={pct(0.5):.2f} p99={pct(0.99):.2f} max={latencies[-1] * 1000:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
