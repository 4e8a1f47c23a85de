#!/usr/bin/env python3
"""Read the clerk-sync mirror read-only, and follow its changes feed.

Run it as a user in the clerk-sync group (usermod -aG clerk-sync appuser),
with Python 3.8 or later and nothing else installed:

    python3 reader.py --db /var/lib/clerk-sync/clerk-sync.db active-users
    python3 reader.py --db /var/lib/clerk-sync/clerk-sync.db follow [--state FILE] [--watch] [--max-seconds N]

active-users  prints clerk_id, email, first and last name of every user that
              exists, tab-separated, from the active_users view.
follow        prints the rows of `changes` after the seq saved in the state
              file (default .clerk-sync-seq; none yet: from the start), then
              saves the last seq printed. With --watch it polls every second
              until --max-seconds have passed (0: until Ctrl-C).

It never writes to the database: the connection is opened with mode=ro.
"""

import argparse
import os
import pathlib
import sqlite3
import sys
import time


def connect(db):
    uri = pathlib.Path(db).absolute().as_uri() + "?mode=ro"
    conn = sqlite3.connect(uri, uri=True, isolation_level=None)
    # Wait for a lock held by the writer (a checkpoint, a recovery) instead of
    # failing at once; clerk-sync's own transactions are short.
    conn.execute("PRAGMA busy_timeout = 5000")
    return conn


def active_users(conn):
    rows = conn.execute(
        "SELECT clerk_id, email, first_name, last_name FROM active_users ORDER BY clerk_id"
    )
    for row in rows:
        print("\t".join("" if v is None else str(v) for v in row))


def load_seq(state):
    try:
        return int(pathlib.Path(state).read_text().strip() or 0)
    except FileNotFoundError:
        return 0


def save_seq(state, seq):
    tmp = pathlib.Path(state + ".tmp")
    tmp.write_text("%d\n" % seq)
    os.replace(tmp, state)  # atomic: a crash leaves the old seq or the new one


def print_changes(conn, after):
    """Print the changes after seq `after`; return the last seq printed."""
    rows = conn.execute(
        "SELECT seq, at, object_type, object_id, change, source FROM changes"
        " WHERE seq > ? ORDER BY seq LIMIT 1000",
        (after,),
    )
    for row in rows:
        print("\t".join("" if v is None else str(v) for v in row), flush=True)
        after = row[0]
    return after


def follow(conn, state, watch, max_seconds):
    seq = load_seq(state)
    oldest = conn.execute("SELECT min(seq) FROM changes").fetchone()[0]
    if seq and oldest is not None and oldest > seq + 1:
        # Retention (serve --keep-days) deleted changes this reader never saw.
        print("reader: changes %d to %d were pruned; re-read the tables" % (seq + 1, oldest - 1), file=sys.stderr)
    deadline = time.monotonic() + max_seconds if max_seconds > 0 else None
    while True:
        last = print_changes(conn, seq)
        if last != seq:
            save_seq(state, last)
            seq = last
            continue  # read on until nothing is new, then sleep
        if not watch or (deadline is not None and time.monotonic() >= deadline):
            return
        time.sleep(1)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--db", default=os.environ.get("CLERK_SYNC_DB", "/var/lib/clerk-sync/clerk-sync.db"))
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("active-users", help="list the users that exist")
    f = sub.add_parser("follow", help="print changes after the saved seq")
    f.add_argument("--state", default=".clerk-sync-seq", help="file holding the last seq seen")
    f.add_argument("--watch", action="store_true", help="keep polling every second")
    f.add_argument("--max-seconds", type=float, default=0, help="stop watching after this long (0: never)")
    args = p.parse_args()

    try:
        conn = connect(args.db)
        if args.command == "active-users":
            active_users(conn)
        else:
            follow(conn, args.state, args.watch, args.max_seconds)
    except sqlite3.Error as e:
        # "unable to open database file": no read permission (join the group),
        # or no such file. "attempt to write a readonly database": the service
        # is stopped, and SQLite cannot create the -wal it needs to read.
        sys.exit("reader: %s: %s" % (args.db, e))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
