"""Writes N events straight into fapilog's PostgresSink; prints the seconds it took.

Run by `cargo bench --bench compare` with the virtualenv's Python:
    fapilog_driver.py DSN TABLE EVENTS BATCH_SIZE DATA_JSON

Timed like pglog's batch mode: from the sink's start (its pool, its table check) until
`stop()` has sent the last batch. The table is created by an untimed first start, as
pglog's is created before its timing. Events have the shape of fapilog's v1.1 envelope,
whose `data` is DATA_JSON (what pglog stores: location, pid, `user`) with a distinct `i`.
"""

import asyncio
import json
import os
import sys
import time
from datetime import datetime, timezone

from fapilog.plugins.sinks.contrib.postgres import PostgresSink, PostgresSinkConfig


def sink(dsn: str, table: str, batch_size: int) -> PostgresSink:
    return PostgresSink(
        PostgresSinkConfig(dsn=dsn, table_name=table, batch_size=batch_size)
    )


async def main(dsn: str, table: str, events: int, batch_size: int, data: dict) -> None:
    setup = sink(dsn, table, batch_size)
    await setup.start()
    await setup.stop()

    pid = os.getpid()
    started = time.perf_counter()
    timed = sink(dsn, table, batch_size)
    await timed.start()
    for i in range(events):
        await timed.write(
            {
                "timestamp": datetime.now(timezone.utc)
                .isoformat()
                .replace("+00:00", "Z"),
                "level": "INFO",
                "message": "benchmark event",
                "logger": "bench",
                "context": {"correlation_id": None},
                "diagnostics": {"pid": pid},
                "data": {**data, "i": i},
            }
        )
    await timed.stop()
    print(time.perf_counter() - started)


if __name__ == "__main__":
    dsn, table, events, batch_size, data = sys.argv[1:]
    asyncio.run(main(dsn, table, int(events), int(batch_size), json.loads(data)))
