//! The Clerk Dashboard's CSV export, a row at a time, each row made into a
//! user object of Clerk's shape.
//!
//! Only what the export holds is carried over: no timestamps, no metadata,
//! and never its `password_digest` or `totp_secret`, which the mirror must
//! not keep. Columns are found by their header, in any order, so an export
//! with more or fewer of them still reads.

use std::io::BufRead;

use serde_json::{json, Value};

use super::scan::Scanner;
use super::{FileError, Record};

/// Where each column the object needs stands in the CSV.
struct Columns {
    id: usize,
    first_name: Option<usize>,
    last_name: Option<usize>,
    username: Option<usize>,
    primary_email: Option<usize>,
    primary_phone: Option<usize>,
    verified_emails: Option<usize>,
    unverified_emails: Option<usize>,
    verified_phones: Option<usize>,
    unverified_phones: Option<usize>,
}

pub(super) struct CsvRows<R> {
    rows: csv::StringRecordsIntoIter<R>,
    columns: Columns,
    /// Lines skipped before the `csv` reader began, which it does not count.
    lines_before: u64,
    number: u64,
    done: bool,
}

impl<R: BufRead> CsvRows<R> {
    pub(super) fn new(scan: Scanner<R>) -> Result<Self, FileError> {
        let lines_before = scan.line - 1;
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(true)
            .trim(csv::Trim::All)
            // Clerk's migration tool's sample starts with a `#` note.
            .comment(Some(b'#'))
            .from_reader(scan.reader);
        let headers = reader
            .headers()
            .map_err(|e| csv_error(&e, lines_before, None))?
            .clone();
        let line = headers
            .position()
            .map_or(1, |p| p.line())
            .saturating_add(lines_before);
        let find = |name: &str| {
            headers
                .iter()
                .position(|h| h.trim().eq_ignore_ascii_case(name))
        };
        let Some(id) = find("id") else {
            return Err(FileError::at(
                line,
                None,
                "not a JSON array, a {\"data\": [...]} page, JSON Lines, nor the Clerk Dashboard's \
                 CSV export (its header has no `id` column)",
            ));
        };
        let columns = Columns {
            id,
            first_name: find("first_name"),
            last_name: find("last_name"),
            username: find("username"),
            primary_email: find("primary_email_address"),
            primary_phone: find("primary_phone_number"),
            verified_emails: find("verified_email_addresses"),
            unverified_emails: find("unverified_email_addresses"),
            verified_phones: find("verified_phone_numbers"),
            unverified_phones: find("unverified_phone_numbers"),
        };
        Ok(CsvRows {
            rows: reader.into_records(),
            columns,
            lines_before,
            number: 0,
            done: false,
        })
    }

    pub(super) fn next_record(&mut self) -> Option<Result<Record, FileError>> {
        if self.done {
            return None;
        }
        let result = match self.rows.next()? {
            Err(e) => Err(csv_error(&e, self.lines_before, Some(self.number + 1))),
            Ok(row) => {
                self.number += 1;
                let line = row.position().map_or(0, |p| p.line()) + self.lines_before;
                csv_user(&self.columns, &row)
                    .map(|object| Record {
                        object,
                        from_csv: true,
                        line,
                        number: self.number,
                    })
                    .map_err(|why| FileError::at(line, Some(self.number), why))
            }
        };
        if result.is_err() {
            self.done = true;
        }
        Some(result)
    }
}

fn csv_error(error: &csv::Error, lines_before: u64, record: Option<u64>) -> FileError {
    FileError {
        line: error.position().map(|p| p.line() + lines_before),
        record,
        message: format!("not a valid CSV row: {error}"),
    }
}

/// A Clerk-shaped user object from one CSV row.
fn csv_user(columns: &Columns, row: &csv::StringRecord) -> Result<String, String> {
    let cell = |column: Option<usize>| {
        column
            .and_then(|i| row.get(i))
            .map(str::trim)
            .filter(|s| !s.is_empty())
    };
    let id = cell(Some(columns.id)).ok_or("no id")?;
    let emails = identifiers(
        cell(columns.primary_email),
        cell(columns.verified_emails),
        cell(columns.unverified_emails),
    );
    let phones = identifiers(
        cell(columns.primary_phone),
        cell(columns.verified_phones),
        cell(columns.unverified_phones),
    );
    let entries = |list: &[(String, Option<&str>)], prefix: &str, object: &str, field: &str| {
        list.iter()
            .enumerate()
            .map(|(n, (value, status))| {
                json!({
                    "id": format!("{prefix}{n}"),
                    "object": object,
                    field: value,
                    "verification": status.map(|s| json!({ "status": s })),
                })
            })
            .collect::<Vec<Value>>()
    };
    // The primary, when the export names one, is always the first entry.
    let primary_email = cell(columns.primary_email).map(|_| "csv_email_0");
    let primary_phone = cell(columns.primary_phone).map(|_| "csv_phone_0");
    let user = json!({
        "object": "user",
        "id": id,
        "first_name": cell(columns.first_name),
        "last_name": cell(columns.last_name),
        "username": cell(columns.username),
        "primary_email_address_id": primary_email,
        "email_addresses": entries(&emails, "csv_email_", "email_address", "email_address"),
        "primary_phone_number_id": primary_phone,
        "phone_numbers": entries(&phones, "csv_phone_", "phone_number", "phone_number"),
    });
    Ok(user.to_string())
}

/// The primary first, then the verified, then the unverified ones, each
/// once (emails compared without case), with what the export says of its
/// verification. Multi-valued cells are split on `|` or `,`, as Clerk's
/// migration tool does: which one the Dashboard writes is not documented.
fn identifiers<'a>(
    primary: Option<&'a str>,
    verified: Option<&'a str>,
    unverified: Option<&'a str>,
) -> Vec<(String, Option<&'static str>)> {
    let split = |cell: Option<&'a str>| {
        cell.into_iter()
            .flat_map(|c| c.split(['|', ',']))
            .map(str::trim)
            .filter(|s| !s.is_empty())
    };
    let verified_list: Vec<&str> = split(verified).collect();
    let unverified_list: Vec<&str> = split(unverified).collect();
    let status = |value: &str| {
        if verified_list.iter().any(|v| v.eq_ignore_ascii_case(value)) {
            Some("verified")
        } else if unverified_list
            .iter()
            .any(|v| v.eq_ignore_ascii_case(value))
        {
            Some("unverified")
        } else {
            None
        }
    };
    let mut out: Vec<(String, Option<&'static str>)> = Vec::new();
    for value in primary
        .into_iter()
        .chain(verified_list.iter().copied())
        .chain(unverified_list.iter().copied())
    {
        if !out.iter().any(|(seen, _)| seen.eq_ignore_ascii_case(value)) {
            out.push((value.to_owned(), status(value)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::import::file::tests::read_all;
    use crate::import::file::{Format, UserFile};
    use std::io::Cursor;

    const EXPORT: &str = "\u{feff}# Password for users with passwords: Kk4aPMeiaRpAs2OeX1NE\n\
id,first_name,last_name,username,primary_email_address,primary_phone_number,verified_email_addresses,unverified_email_addresses,verified_phone_numbers,unverified_phone_numbers,totp_secret,password_digest,password_hasher\n\
user_2YDryYFVMM1W1plDDKz7Gzf4we6,Jane,Doe,,jane.doe@test.com,,jane.doe@test.com|janedoe@test.com,old@test.com,,,,$2b$10$U4C0ZY,bcrypt\n\
user_3,,,\"o'neil, jr\",,+15550100,,,+15550100,,JBSWY3DPEHPK3PXP,,\n";

    #[test]
    fn a_dashboard_export_becomes_clerk_shaped_users() {
        let (format, records) = read_all(EXPORT, 5);
        assert_eq!(format, Format::Csv);
        let records: Vec<Record> = records.into_iter().map(Result::unwrap).collect();
        assert_eq!(records.len(), 2);
        assert!(records.iter().all(|r| r.from_csv));
        assert_eq!((records[0].line, records[0].number), (3, 1));
        let jane: Value = serde_json::from_str(&records[0].object).unwrap();
        assert_eq!(jane["id"], "user_2YDryYFVMM1W1plDDKz7Gzf4we6");
        assert_eq!(jane["first_name"], "Jane");
        assert_eq!(jane["username"], Value::Null);
        // The primary is found by id, as a webhook's user's is.
        let primary = jane["primary_email_address_id"].as_str().unwrap();
        let addresses = jane["email_addresses"].as_array().unwrap();
        let entry = addresses.iter().find(|e| e["id"] == primary).unwrap();
        assert_eq!(entry["email_address"], "jane.doe@test.com");
        assert_eq!(entry["verification"]["status"], "verified");
        let all: Vec<_> = addresses
            .iter()
            .map(|e| e["email_address"].clone())
            .collect();
        assert_eq!(
            all,
            ["jane.doe@test.com", "janedoe@test.com", "old@test.com"]
        );
        assert_eq!(addresses[2]["verification"]["status"], "unverified");
        // Secrets in the export are not carried over.
        let text = records
            .iter()
            .map(|r| r.object.as_str())
            .collect::<String>();
        assert!(
            !text.contains("$2b$") && !text.contains("JBSWY3DP"),
            "{text}"
        );

        let other: Value = serde_json::from_str(&records[1].object).unwrap();
        assert_eq!(other["username"], "o'neil, jr");
        assert_eq!(other["primary_email_address_id"], Value::Null);
        assert_eq!(other["email_addresses"], json!([]));
        assert_eq!(other["phone_numbers"][0]["phone_number"], "+15550100");
        assert_eq!(other["primary_phone_number_id"], "csv_phone_0");
    }

    #[test]
    fn a_broken_csv_row_names_its_line() {
        let text = "id,first_name\nu1,A\nu2,B,extra\nu3,C\n";
        let (_, records) = read_all(text, 64);
        assert!(records[0].is_ok());
        let error = records[1].as_ref().unwrap_err();
        assert_eq!(error.line, Some(3), "{error}");
        assert!(error.to_string().starts_with("line 3"), "{error}");
        assert_eq!(records.len(), 2);

        let (_, records) = read_all("id,first_name\nu1,A\n,B\n", 64);
        let error = records[1].as_ref().unwrap_err().to_string();
        assert_eq!(error, "line 3 (record 2): no id");

        let e = UserFile::new(Cursor::new("name,email\nA,a@x\n"))
            .err()
            .unwrap();
        assert!(e.to_string().contains("no `id` column"), "{e}");
    }
}
