#!/usr/bin/env node
// Read the clerk-sync mirror read-only, and follow its changes feed.
//
// Run it as a user in the clerk-sync group (usermod -aG clerk-sync appuser),
// with Node.js 20 or later, in this directory:
//
//   npm ci
//   node reader.js --db /var/lib/clerk-sync/clerk-sync.db active-users
//   node reader.js --db /var/lib/clerk-sync/clerk-sync.db follow [--state FILE] [--watch] [--max-seconds N]
//
// active-users  prints clerk_id, email, first and last name of every user
//               that exists, tab-separated, from the active_users view.
// follow        prints the rows of `changes` after the seq saved in the state
//               file (default .clerk-sync-seq; none yet: from the start), then
//               saves the last seq printed. With --watch it polls every second
//               until --max-seconds have passed (0: until Ctrl-C).
//
// It never writes to the database: better-sqlite3 opens it read-only.
'use strict';

const fs = require('node:fs');
const { parseArgs } = require('node:util');
const { setTimeout: sleep } = require('node:timers/promises');
const Database = require('better-sqlite3');

const { values: opts, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    db: { type: 'string', default: process.env.CLERK_SYNC_DB || '/var/lib/clerk-sync/clerk-sync.db' },
    state: { type: 'string', default: '.clerk-sync-seq' },
    watch: { type: 'boolean', default: false },
    'max-seconds': { type: 'string', default: '0' },
  },
});

const line = (row) => Object.values(row).map((v) => v ?? '').join('\t');

function activeUsers(db) {
  const rows = db.prepare(
    'SELECT clerk_id, email, first_name, last_name FROM active_users ORDER BY clerk_id',
  );
  for (const row of rows.iterate()) console.log(line(row));
}

function loadSeq(file) {
  try {
    return Number(fs.readFileSync(file, 'utf8').trim()) || 0;
  } catch (e) {
    if (e.code === 'ENOENT') return 0;
    throw e;
  }
}

function saveSeq(file, seq) {
  fs.writeFileSync(`${file}.tmp`, `${seq}\n`);
  fs.renameSync(`${file}.tmp`, file); // atomic: a crash leaves the old seq or the new one
}

async function follow(db) {
  const changesAfter = db.prepare(
    'SELECT seq, at, object_type, object_id, change, source FROM changes WHERE seq > ? ORDER BY seq LIMIT 1000',
  );
  let seq = loadSeq(opts.state);
  const oldest = db.prepare('SELECT min(seq) AS seq FROM changes').get().seq;
  if (seq && oldest !== null && oldest > seq + 1) {
    // Retention (serve --keep-days) deleted changes this reader never saw.
    console.error(`reader: changes ${seq + 1} to ${oldest - 1} were pruned; re-read the tables`);
  }
  const maxMs = Number(opts['max-seconds']) * 1000;
  const deadline = Date.now() + maxMs;
  for (;;) {
    let last = seq;
    for (const row of changesAfter.iterate(seq)) {
      console.log(line(row));
      last = row.seq;
    }
    if (last !== seq) {
      saveSeq(opts.state, last);
      seq = last;
      continue; // read on until nothing is new, then sleep
    }
    if (!opts.watch || (maxMs > 0 && Date.now() >= deadline)) return;
    await sleep(1000);
  }
}

async function main() {
  const command = positionals[0];
  if (command !== 'active-users' && command !== 'follow') {
    console.error('usage: node reader.js [--db PATH] active-users | follow [--state FILE] [--watch] [--max-seconds N]');
    process.exit(2);
  }
  // timeout is SQLite's busy_timeout: wait up to 5 s for a lock held by the
  // writer (a checkpoint, a recovery) instead of failing at once.
  const db = new Database(opts.db, { readonly: true, fileMustExist: true, timeout: 5000 });
  try {
    if (command === 'active-users') activeUsers(db);
    else await follow(db);
  } finally {
    db.close();
  }
}

main().catch((e) => {
  // SQLITE_CANTOPEN: no read permission (join the group), or no such file.
  // SQLITE_READONLY_DIRECTORY: the service is stopped, and SQLite
  // cannot create the -wal it needs to read.
  console.error(`reader: ${opts.db}: ${e.code ? `${e.code}: ` : ''}${e.message}`);
  process.exit(1);
});
