//! Apps on the same machine read the live mirror as their own user.
//!
//! The systemd unit runs `serve` as a fixed user and group, in a state
//! directory of mode 0750, with `UMask=0027`. This checks the property
//! that setup is for, without systemd: `serve` runs as one uid with the
//! unit's group and umask; a process of another uid that is in the group
//! reads the live file read-only with Python's `sqlite3` while `serve` goes
//! on writing, and cannot write it; a process outside the group cannot open
//! it at all. Permissions bind only a user other than root, so the test
//! needs root (to switch uids with `setpriv`) and skips otherwise.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::process::*;
use crate::support::*;

/// The service's user and group, and two other users. Numeric ids that need
/// not exist in /etc/passwd.
const SERVICE_UID: u32 = 64101;
const SERVICE_GID: u32 = 64100;
const READER_UID: u32 = 64102;
const OUTSIDER_UID: u32 = 64103;

const WAIT: Duration = Duration::from_secs(15);

/// One connection held open across commits: each line on stdin asks for the
/// active users (id and email) and the last `changes.seq`, as JSON.
const HELD_READER: &str = r#"
import json, pathlib, sqlite3, sys
db = sqlite3.connect(pathlib.Path(sys.argv[1]).as_uri() + "?mode=ro", uri=True, timeout=5)
for _ in sys.stdin:
    users = db.execute("SELECT clerk_id, email FROM active_users ORDER BY clerk_id").fetchall()
    seq = db.execute("SELECT coalesce(max(seq), 0) FROM changes").fetchone()[0]
    print(json.dumps({"users": users, "seq": seq}), flush=True)
"#;

/// A fresh process: read once, then try to write through a read-write open.
const READ_THEN_TRY_WRITE: &str = r#"
import json, pathlib, sqlite3, sys
uri = pathlib.Path(sys.argv[1]).as_uri()
db = sqlite3.connect(uri + "?mode=ro", uri=True, timeout=5)
out = {"users": db.execute("SELECT clerk_id, email FROM active_users ORDER BY clerk_id").fetchall()}
try:
    rw = sqlite3.connect(uri + "?mode=rw", uri=True, timeout=5)
    rw.execute("DELETE FROM users")
    rw.commit()
    out["write"] = "written"
except sqlite3.Error as e:
    out["write"] = "refused: %s" % e
print(json.dumps(out))
"#;

/// What a process outside the group gets: the plain open's errno name and
/// SQLite's answer.
const OUTSIDER: &str = r#"
import errno, json, pathlib, sqlite3, sys
p = sys.argv[1]
out = {}
try:
    open(p, "rb").close()
    out["open"] = "ok"
except OSError as e:
    out["open"] = errno.errorcode.get(e.errno, str(e.errno))
try:
    db = sqlite3.connect(pathlib.Path(p).as_uri() + "?mode=ro", uri=True, timeout=1)
    db.execute("SELECT count(*) FROM users").fetchone()
    out["sqlite"] = "ok"
except sqlite3.Error as e:
    out["sqlite"] = str(e)
print(json.dumps(out))
"#;

#[tokio::test]
async fn a_group_member_reads_the_live_file_and_others_cannot() {
    let Some(tools) = Tools::find() else { return };
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::chown(dir.path(), Some(SERVICE_UID), Some(SERVICE_GID)).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o750)).unwrap();
    let db = dir.path().join("clerk-sync.db");
    let mut serve = ServeAs::start(&tools, dir.path(), &db);

    let mut users = Vec::new();
    for _ in 0..3 {
        users.push(deliver_new_user(serve.addr).await);
    }

    // The files are the service's, readable by its group and nobody else.
    assert_mode(dir.path(), 0o750);
    for name in ["clerk-sync.db", "clerk-sync.db-wal", "clerk-sync.db-shm"] {
        let path = dir.path().join(name);
        assert_mode(&path, 0o640);
        let m = std::fs::metadata(&path).unwrap();
        assert_eq!(
            (m.uid(), m.gid()),
            (SERVICE_UID, SERVICE_GID),
            "{name} belongs to the service's user and group"
        );
    }

    // A group member holds a read-only connection open while serve writes.
    let mut held = HeldReader::start(&tools, &db);
    let first = held.read();
    assert_users(&first, &users, "the group member's first read");
    let first_seq = first["seq"].as_i64().unwrap();
    assert!(first_seq >= 3, "three changes by now: {first}");
    for _ in 0..2 {
        users.push(deliver_new_user(serve.addr).await);
    }
    let second = held.read();
    assert_users(
        &second,
        &users,
        "the same connection after two more commits",
    );
    assert!(second["seq"].as_i64().unwrap() >= first_seq + 2, "{second}");

    // A fresh group member's process sees them too, and cannot write.
    users.push(deliver_new_user(serve.addr).await);
    let fresh = python_as(
        &tools,
        &[
            "--reuid",
            &READER_UID.to_string(),
            "--regid",
            &READER_UID.to_string(),
        ],
        &["--groups", &SERVICE_GID.to_string()],
        READ_THEN_TRY_WRITE,
        &db,
    );
    assert_users(&fresh, &users, "a new process of the group member");
    let write = fresh["write"].as_str().unwrap();
    assert!(
        write.starts_with("refused:"),
        "the group member wrote: {fresh}"
    );
    let again = held.read();
    assert_users(
        &again,
        &users,
        "the held connection after the write attempt",
    );

    // A user outside the group cannot even open the file.
    let outsider = python_as(
        &tools,
        &[
            "--reuid",
            &OUTSIDER_UID.to_string(),
            "--regid",
            &OUTSIDER_UID.to_string(),
        ],
        &["--clear-groups"],
        OUTSIDER,
        &db,
    );
    assert_eq!(outsider["open"], "EACCES", "{outsider}");
    assert_ne!(outsider["sqlite"], "ok", "{outsider}");

    // Readers left nothing behind, and serve still writes and stops cleanly.
    held.finish();
    users.push(deliver_new_user(serve.addr).await);
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["clerk-sync.db", "clerk-sync.db-shm", "clerk-sync.db-wal"],
        "readers created no file"
    );
    serve.stop_cleanly();
    assert_mode(&db, 0o640);
    let c = open_db(&db);
    assert_eq!(
        count(&c, "active_users"),
        users.len() as i64,
        "every delivery landed"
    );
}

/// setpriv and a python3 with `sqlite3` that any user can run; `None`
/// (printed as a skip) when not root or one is missing.
struct Tools {
    setpriv: PathBuf,
    python: PathBuf,
}

impl Tools {
    fn find() -> Option<Tools> {
        if !is_root() {
            eprintln!(
                "skipped: file permissions between users can only be tested as root (to switch uids with setpriv)"
            );
            return None;
        }
        let Some(setpriv) = which("setpriv") else {
            eprintln!("skipped: running as root without setpriv (util-linux)");
            return None;
        };
        // A python3 outside root's home, which other users can execute.
        let Some(python) = ["/usr/bin/python3", "/usr/local/bin/python3"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
            .or_else(|| which("python3"))
        else {
            eprintln!("skipped: no python3 to read the database as another user");
            return None;
        };
        let probe = Command::new(&setpriv)
            .args(["--reuid", &OUTSIDER_UID.to_string()])
            .args(["--regid", &OUTSIDER_UID.to_string(), "--clear-groups"])
            .arg(&python)
            .args(["-c", "import sqlite3"])
            .current_dir("/")
            .stdin(Stdio::null())
            .output();
        if !probe.is_ok_and(|o| o.status.success()) {
            eprintln!(
                "skipped: {} with sqlite3 cannot be run by another user",
                python.display()
            );
            return None;
        }
        Some(Tools { setpriv, python })
    }
}

/// `clerk-sync serve` as the service's uid and gid, no other groups, umask 027.
struct ServeAs {
    child: Child,
    addr: SocketAddr,
    logs: mpsc::Receiver<String>,
}

impl ServeAs {
    fn start(tools: &Tools, dir: &Path, db: &Path) -> ServeAs {
        // The harness's clean environment, with setpriv in front.
        let base = base_command(dir);
        let mut cmd = Command::new(&tools.setpriv);
        for (k, v) in base.get_envs() {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        cmd.args(["--reuid", &SERVICE_UID.to_string()])
            .args(["--regid", &SERVICE_GID.to_string(), "--clear-groups"])
            .args(["/bin/sh", "-c", "umask 027; exec \"$0\" \"$@\"", BIN])
            .args(["serve", "--listen", "127.0.0.1:0", "--db"])
            .arg(db)
            .env("CLERK_WEBHOOK_SIGNING_SECRET", SECRET)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn setpriv clerk-sync serve");
        let logs = lines_of(child.stderr.take().unwrap());
        let deadline = Instant::now() + WAIT;
        let mut seen = String::new();
        let addr = loop {
            match logs.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => {
                    let line = strip_ansi(&line);
                    seen.push_str(&line);
                    seen.push('\n');
                    if let Some(a) = listen_address(&line) {
                        break a;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("serve exited before listening; output:\n{seen}");
                }
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("serve did not log `listening on http://` within {WAIT:?}:\n{seen}");
            }
        };
        assert!(addr.ip().is_loopback(), "bound {addr}");
        ServeAs { child, addr, logs }
    }

    fn stop_cleanly(&mut self) {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(ok.success());
        let status = wait_bounded(&mut self.child, WAIT).unwrap_or_else(|| {
            let _ = self.child.kill();
            let _ = self.child.wait();
            panic!("serve did not stop within {WAIT:?}")
        });
        let logs: Vec<String> = self.logs.try_iter().collect();
        assert!(
            status.success(),
            "serve exited {status}:\n{}",
            logs.join("\n")
        );
    }
}

impl Drop for ServeAs {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The group member's long-lived Python process with one open connection.
struct HeldReader {
    child: Child,
    stdin: Option<ChildStdin>,
    out: mpsc::Receiver<String>,
}

impl HeldReader {
    fn start(tools: &Tools, db: &Path) -> HeldReader {
        let mut child = Command::new(&tools.setpriv)
            .args(["--reuid", &READER_UID.to_string()])
            .args(["--regid", &READER_UID.to_string()])
            .args(["--groups", &SERVICE_GID.to_string()])
            .arg(&tools.python)
            .args(["-c", HELD_READER])
            .arg(db)
            .current_dir("/")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn the reader");
        let stdin = child.stdin.take();
        let out = lines_of(child.stdout.take().unwrap());
        HeldReader { child, stdin, out }
    }

    fn read(&mut self) -> Value {
        let stdin = self.stdin.as_mut().expect("reader still open");
        writeln!(stdin, "read")
            .and_then(|_| stdin.flush())
            .expect("ask the reader");
        let line = self
            .out
            .recv_timeout(WAIT)
            .unwrap_or_else(|e| panic!("no answer from the reader within {WAIT:?}: {e}"));
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("reader said {line:?}: {e}"))
    }

    fn finish(&mut self) {
        drop(self.stdin.take());
        let status = wait_bounded(&mut self.child, WAIT).expect("the reader ends at EOF");
        assert!(status.success(), "reader exited {status}");
    }
}

impl Drop for HeldReader {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Run `script DB` with python3 as `ids` + `groups`, bounded; its stdout as JSON.
fn python_as(tools: &Tools, ids: &[&str], groups: &[&str], script: &str, db: &Path) -> Value {
    let mut child = Command::new(&tools.setpriv)
        .args(ids)
        .args(groups)
        .arg(&tools.python)
        .args(["-c", script])
        .arg(db)
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn python3");
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let status = wait_bounded(&mut child, WAIT).unwrap_or_else(|| {
        let _ = child.kill();
        let _ = child.wait();
        panic!("python3 as {ids:?} did not finish within {WAIT:?}")
    });
    let (out, err) = (t_out.join().unwrap(), t_err.join().unwrap());
    assert!(
        status.success(),
        "python3 as {ids:?} exited {status}: {err}"
    );
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("python3 said {out:?} ({err}): {e}"))
}

/// A `user.created` for a new user, signed with the harness's own signer.
async fn deliver_new_user(addr: SocketAddr) -> String {
    let id = unique_user_id();
    let d = delivery(user_event(
        "user.created",
        &user_data(&id, now_ms(), now_ms()),
    ));
    let status = try_deliver(addr, DEFAULT_PATH, &d).await;
    assert_eq!(status, Some(200), "delivery of {id}");
    id
}

/// The reader's `users` are exactly `want`, each with the email Clerk sent.
fn assert_users(got: &Value, want: &[String], what: &str) {
    let mut want: Vec<(String, String)> = want
        .iter()
        .map(|id| (id.clone(), format!("{}@example.org", id.to_lowercase())))
        .collect();
    want.sort();
    let got: Vec<(String, String)> = got["users"]
        .as_array()
        .unwrap_or_else(|| panic!("{what}: no users in {got}"))
        .iter()
        .map(|r| {
            (
                r[0].as_str().unwrap_or_default().to_owned(),
                r[1].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(got, want, "{what}");
}

fn assert_mode(path: &Path, want: u32) {
    let mode = std::fs::metadata(path).unwrap().permissions().mode() & 0o7777;
    assert_eq!(
        mode,
        want,
        "mode of {} is {mode:o}, want {want:o}",
        path.display()
    );
}

/// Lines of `stream`, read on a thread, so every wait on them can be bounded.
fn lines_of<R: Read + Send + 'static>(stream: R) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn listen_address(line: &str) -> Option<SocketAddr> {
    let rest = &line[line.find("listening on http://")? + "listening on http://".len()..];
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == ':'))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}
