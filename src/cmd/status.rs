//! `clerk-sync status`: the report, as text or JSON.

use std::process::ExitCode;

use anyhow::bail;
use serde_json::Value;

use super::print_out;
use crate::cli::StatusArgs;
use crate::event::Kind;
use crate::store::status::{plural, status_report};

/// `status`: counts, last event, schema version and integrity, read-only.
///
/// # Errors
/// When the file is missing or is not a clerk-sync database, and, after the
/// report, when its schema is newer than this binary's.
pub fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let report = status_report(&args.db)?;
    if args.json {
        print_out(&format!("{}\n", serde_json::to_string_pretty(&report)?))?;
    } else {
        print_out(&status_text(&report))?;
    }
    let version = report["schema_version"].as_i64().unwrap_or(0);
    if version > crate::store::SCHEMA_VERSION {
        bail!(
            "{} has schema version {version}, newer than this binary's {}: serve refuses it; upgrade clerk-sync",
            args.db.display(),
            crate::store::SCHEMA_VERSION
        );
    }
    Ok(if report["integrity"] == "ok" {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The report as text; a figure a damaged file would not give up is left out.
fn status_text(r: &Value) -> String {
    let mut lines = vec![format!(
        "database        {}",
        r["database"].as_str().unwrap_or("")
    )];
    if !r["schema_version"].is_null() {
        lines.push(format!(
            "schema version  {} (journal {})",
            r["schema_version"],
            r["journal_mode"].as_str().unwrap_or("unknown")
        ));
    }
    for kind in Kind::ALL {
        let name = plural(kind);
        let u = &r[name];
        if !u.is_null() {
            lines.push(format!(
                "{name:<15} {} ({} active, {} tombstones)",
                u["total"], u["active"], u["tombstones"]
            ));
        }
    }
    if !r["changes"].is_null() {
        lines.push(format!(
            "changes         {} rows, last seq {}",
            r["changes"]["rows"], r["changes"]["last_seq"]
        ));
    }
    if !r["events"].is_null() {
        lines.push(format!("events          {}", r["events"]["total"]));
        if let Some(types) = r["events"]["by_type"].as_object() {
            for (kind, outcomes) in types {
                let parts: Vec<String> = outcomes
                    .as_object()
                    .map(|o| o.iter().map(|(k, v)| format!("{k} {v}")).collect())
                    .unwrap_or_default();
                lines.push(format!("  {kind:<28} {}", parts.join(", ")));
            }
        }
        lines.push(match r["last_event"].as_object() {
            Some(last) => format!(
                "last event      {} {} at {} ms ({} s ago)",
                last["type"].as_str().unwrap_or(""),
                last["id"].as_str().unwrap_or(""),
                last["received_at"],
                last["seconds_ago"]
            ),
            None => "last event      none".to_owned(),
        });
    }
    match r["last_import"].as_object() {
        Some(last) => {
            let counts = last["counts"]
                .as_object()
                .map_or_else(String::new, |types| {
                    types
                        .iter()
                        .map(|(kind, c)| {
                            format!(
                                "; {kind}: {} listed, {} inserted, {} updated, {} deleted",
                                c["listed"], c["inserted"], c["updated"], c["deleted"]
                            )
                        })
                        .collect()
                });
            lines.push(format!(
                "last import     {} at {} ms{counts}",
                last["result"].as_str().unwrap_or(""),
                last["started_at"]
            ));
        }
        None if r.get("last_import").is_some() => lines.push("last import     never".to_owned()),
        None => {}
    }
    lines.push(format!(
        "integrity       {}",
        r["integrity"].as_str().unwrap_or("")
    ));
    lines.join("\n") + "\n"
}
