#!/usr/bin/env python3
"""What a document's history and its data frames cost: stamping, history(), pandas.

    python bench/history_bench.py                     # the full run, about a minute
    python bench/history_bench.py --changes 10000 --rows 10000   # a quick one
    python bench/history_bench.py --json bench/results/history.json

Everything runs in this process; nothing touches the network. Three parts:

1. *Stamping* (``crdt/stamp.py``): the time of one ``with doc.change()``
   setting one key, stamped (made on a copy of the document, its time
   written in, applied) and unstamped (``doc.stamp_limit = 0``: the binding's
   own commit, time unknown), for documents of 10, 10,000 and 100,000 keys
   and one of ``--changes`` changes. Median of repeated changes.
2. *History*: a document of ``--changes`` changes (each setting one of 1,000
   keys; made with the binding directly, so building it is not what is
   measured), then ``doc.history()``, ``len``, iterating every record,
   reading the last 20 and formatting them as ``%autosync history`` does.
3. *Frames*: a document with ``--rows`` rows of five columns (int, text,
   float, bool, timestamp) under ``rows``; ``doc.to_pandas("rows")``, then
   ``update_from_pandas`` after changing 1% of the cells at random (the op
   count of the change is printed: one per cell changed, except text cells,
   which are spliced: one per character deleted or inserted).
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import random
import statistics
import time
from collections.abc import Callable
from typing import Any

import automerge.core as am

from autosync_jupyter import Document
from autosync_jupyter.crdt.stamp import STAMP_LIMIT
from autosync_jupyter.jupyter.magics import history_table

UTC = dt.timezone.utc


def seconds(action: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = action()
    return time.perf_counter() - started, result


def change_cost(doc: Document, *, stamped: bool, repeat: int) -> float:
    """Median milliseconds of one change setting one key."""
    doc.stamp_limit = None if stamped else 0
    samples = []
    for i in range(repeat):
        started = time.perf_counter()
        with doc.change() as d:
            d["bench"] = i
        samples.append(time.perf_counter() - started)
    doc.stamp_limit = STAMP_LIMIT
    return statistics.median(samples) * 1000


def long_history(changes: int) -> Document:
    core = am.Document()
    for i in range(changes):
        with core.transaction() as tx:
            tx.put(am.ROOT, f"k{i % 1000}", am.ScalarType.Int, i)
    return Document(core=core)


def stamping(changes: int, repeat: int) -> list[dict[str, Any]]:
    rows = []
    documents: list[tuple[str, Callable[[], Document]]] = [
        ("10 keys", lambda: Document({f"k{i}": i for i in range(10)})),
        ("10,000 keys", lambda: Document({f"k{i}": i for i in range(10_000)})),
        ("100,000 keys", lambda: Document({f"k{i}": i for i in range(100_000)})),
        (f"{changes:,} changes", lambda: long_history(changes)),
    ]
    for name, make in documents:
        doc = make()
        ops = doc._stamper.size()
        stamped = change_cost(doc, stamped=True, repeat=repeat)
        plain = change_cost(doc, stamped=False, repeat=repeat)
        rows.append({"document": name, "ops": ops, "stamped_ms": stamped, "unstamped_ms": plain})
    return rows


def history(changes: int) -> dict[str, float]:
    build, doc = seconds(lambda: long_history(changes))
    take, records = seconds(doc.history)
    count, length = seconds(lambda: len(records))
    assert length == changes
    walk, _ = seconds(lambda: sum(1 for _ in records))
    last, tail = seconds(lambda: records[-20:])
    assert len(tail) == 20
    table, _ = seconds(lambda: history_table(doc.history(), last=20))
    return {
        "build the document (binding, not measured below)": build,
        "doc.history()": take,
        "len(history)": count,
        "iterate every record": walk,
        "history[-20:]": last,
        "%autosync history table (-n 20, with history())": table,
    }


def frames(rows: int, seed: int) -> dict[str, float]:
    start = dt.datetime(2024, 1, 1, tzinfo=UTC)
    content = {
        "rows": [
            {
                "id": i,
                "name": f"row {i}",
                "score": i / 4,
                "ok": i % 3 == 0,
                "when": start + dt.timedelta(minutes=i),
            }
            for i in range(rows)
        ]
    }
    build, doc = seconds(lambda: Document(content))
    imported, _ = seconds(lambda: importlib.import_module("pandas"))
    read, frame = seconds(lambda: doc.to_pandas("rows"))
    assert frame.shape == (rows, 5)
    rng = random.Random(seed)
    columns = ["name", "score", "ok", "when"]
    cells = rng.sample(range(rows * len(columns)), rows * 5 // 100)  # 1% of all 5 columns
    for cell in cells:
        row, column = divmod(cell, len(columns))
        name = columns[column]
        if name == "name":
            frame.loc[row, name] = f"renamed {row}"
        elif name == "score":
            frame.loc[row, name] = -1.0 - row
        elif name == "ok":
            frame.loc[row, name] = not frame.loc[row, name]
        else:
            frame.loc[row, name] = frame.loc[row, name] + dt.timedelta(days=1)
    before = len(doc.history())

    def write() -> None:
        with doc.change(message="1% of the cells") as d:
            d.update_from_pandas("rows", frame)

    update, _ = seconds(write)
    records = doc.history()
    assert len(records) == before + 1
    ops = records[-1].ops
    return {
        f"build the document ({rows:,} rows, not measured below)": build,
        "import pandas (first use, not measured below)": imported,
        "doc.to_pandas('rows')": read,
        f"update_from_pandas, {len(cells):,} cells changed ({ops:,} ops)": update,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--changes", type=int, default=100_000, help="changes in the history")
    parser.add_argument("--rows", type=int, default=100_000, help="rows of the frame")
    parser.add_argument("--repeat", type=int, default=30, help="changes timed per document")
    parser.add_argument("--seed", type=int, default=16)
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = parser.parse_args()

    print("1. One change setting one key: stamped (time + message) vs the binding's commit")
    stamp_rows = stamping(args.changes, args.repeat)
    print(f"   {'document':<18} {'op counter':>11} {'stamped':>11} {'unstamped':>11}")
    for row in stamp_rows:
        print(
            f"   {row['document']:<18} {row['ops']:>11,} {row['stamped_ms']:>8.3f} ms"
            f" {row['unstamped_ms']:>8.3f} ms"
        )
    print(f"\n2. History of {args.changes:,} changes")
    history_rows = history(args.changes)
    for name, value in history_rows.items():
        print(f"   {name:<55} {value * 1000:>10.1f} ms")
    print(f"\n3. Data frames of {args.rows:,} rows x 5 columns")
    frame_rows = frames(args.rows, args.seed)
    for name, value in frame_rows.items():
        print(f"   {name:<55} {value * 1000:>10.1f} ms")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(
                {"stamping": stamp_rows, "history_s": history_rows, "frames_s": frame_rows},
                out,
                indent=2,
            )


if __name__ == "__main__":
    main()
