//! The vendor's ledger (feature `issue`): customers and the licenses issued to them, in one JSON
//! file replaced atomically (temporary file, fsync, rename, fsync of the directory).

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::format::is_name;
use crate::license::License;

/// The ledger file's `version`.
const LEDGER_VERSION: u32 = 1;
/// Ledger files longer than this are refused.
const MAX_LEDGER_BYTES: u64 = 64 * 1024 * 1024;

/// Why a ledger operation failed.
#[derive(Debug, Error)]
pub enum LedgerError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: not a CAIO license ledger: {detail}")]
    Format { path: String, detail: String },
    #[error("customer `{0}` already exists")]
    DuplicateCustomer(String),
    #[error("unknown customer `{0}`; add it with `customers add`")]
    UnknownCustomer(String),
    #[error("invalid {field}: {detail}")]
    Invalid { field: &'static str, detail: String },
}

/// A customer of the vendor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Customer {
    pub id: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Unix seconds.
    pub created_at: i64,
}

/// A license as recorded: its contents, the key itself and its revocation, if any.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerLicense {
    pub license: License,
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked: Option<Revoked>,
}

/// When and why a recorded license was revoked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Revoked {
    pub reason: String,
    pub revoked_at: i64,
}

/// A recorded license's standing at a moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LedgerStatus {
    Active,
    ExpiringSoon,
    NotYetValid,
    Expired,
    Revoked,
}

impl LedgerStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            LedgerStatus::Active => "active",
            LedgerStatus::ExpiringSoon => "expiring_soon",
            LedgerStatus::NotYetValid => "not_yet_valid",
            LedgerStatus::Expired => "expired",
            LedgerStatus::Revoked => "revoked",
        }
    }
}

impl LedgerLicense {
    /// The standing at `now`; a valid license expiring within `soon_s` seconds is `ExpiringSoon`.
    pub fn status_at(&self, now: i64, soon_s: i64) -> LedgerStatus {
        let l = &self.license;
        if self.revoked.is_some() {
            LedgerStatus::Revoked
        } else if now < l.not_before {
            LedgerStatus::NotYetValid
        } else if now >= l.expires_at {
            LedgerStatus::Expired
        } else if l.expires_at - now <= soon_s {
            LedgerStatus::ExpiringSoon
        } else {
            LedgerStatus::Active
        }
    }
}

/// Counts over the ledger at a moment. `valid` = `active` + `expiring_soon`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LedgerStats {
    pub customers: usize,
    pub licenses: usize,
    pub valid: usize,
    pub active: usize,
    pub expiring_soon: usize,
    pub not_yet_valid: usize,
    pub expired: usize,
    pub revoked: usize,
}

/// Export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    Csv,
    Json,
}

/// The ledger: customers and licenses, in issue order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ledger {
    pub version: u32,
    pub customers: Vec<Customer>,
    pub licenses: Vec<LedgerLicense>,
}

impl Default for Ledger {
    fn default() -> Ledger {
        Ledger {
            version: LEDGER_VERSION,
            customers: Vec::new(),
            licenses: Vec::new(),
        }
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> LedgerError + '_ {
    move |source| LedgerError::Io {
        path: path.display().to_string(),
        source,
    }
}

impl Ledger {
    /// Reads the ledger at `path`; a missing file is an empty ledger.
    pub fn load(path: &Path) -> Result<Ledger, LedgerError> {
        let meta = match fs::metadata(path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Ledger::default()),
            Err(e) => return Err(io_err(path)(e)),
        };
        let format_err = |detail: String| LedgerError::Format {
            path: path.display().to_string(),
            detail,
        };
        if meta.len() > MAX_LEDGER_BYTES {
            return Err(format_err(format!("larger than {MAX_LEDGER_BYTES} bytes")));
        }
        let text = fs::read_to_string(path).map_err(io_err(path))?;
        let ledger: Ledger = serde_json::from_str(&text).map_err(|e| format_err(e.to_string()))?;
        if ledger.version != LEDGER_VERSION {
            return Err(format_err(format!(
                "version {}; expected {LEDGER_VERSION}",
                ledger.version
            )));
        }
        Ok(ledger)
    }

    /// Writes the ledger to `path` atomically.
    pub fn save(&self, path: &Path) -> Result<(), LedgerError> {
        let mut text = serde_json::to_string_pretty(self).map_err(|e| LedgerError::Format {
            path: path.display().to_string(),
            detail: e.to_string(),
        })?;
        text.push('\n');
        // The ledger holds every key issued: readable by its owner only.
        write_atomically_with_mode(path, text.as_bytes(), 0o600).map_err(io_err(path))
    }

    /// Adds a customer.
    pub fn add_customer(
        &mut self,
        id: &str,
        name: &str,
        email: Option<&str>,
        now: i64,
    ) -> Result<&Customer, LedgerError> {
        if !is_name(id, 128) {
            return Err(LedgerError::Invalid {
                field: "customer id",
                detail: "1-128 characters of [A-Za-z0-9._-], starting with a letter or digit"
                    .into(),
            });
        }
        if name.trim().is_empty() || name.len() > 256 {
            return Err(LedgerError::Invalid {
                field: "name",
                detail: "must be 1-256 bytes".into(),
            });
        }
        if self.customer(id).is_some() {
            return Err(LedgerError::DuplicateCustomer(id.to_owned()));
        }
        self.customers.push(Customer {
            id: id.to_owned(),
            name: name.trim().to_owned(),
            email: email.map(str::to_owned),
            created_at: now,
        });
        self.customers.sort_by(|a, b| a.id.cmp(&b.id));
        self.customer(id)
            .ok_or_else(|| LedgerError::UnknownCustomer(id.to_owned()))
    }

    /// The customer with this id.
    pub fn customer(&self, id: &str) -> Option<&Customer> {
        self.customers.iter().find(|c| c.id == id)
    }

    /// Checks that a license may be recorded for `customer_id` (the customer must be known).
    pub fn check_customer(&self, customer_id: &str) -> Result<(), LedgerError> {
        match self.customer(customer_id) {
            Some(_) => Ok(()),
            None => Err(LedgerError::UnknownCustomer(customer_id.to_owned())),
        }
    }

    /// Records an issued license.
    pub fn record_issued(&mut self, license: License, key: String) -> Result<(), LedgerError> {
        self.check_customer(&license.customer_id)?;
        self.licenses.push(LedgerLicense {
            license,
            key,
            revoked: None,
        });
        Ok(())
    }

    /// Marks a recorded license revoked; returns whether it was in the ledger.
    pub fn record_revoked(&mut self, key_id: &str, reason: &str, now: i64) -> bool {
        let mut found = false;
        for entry in self
            .licenses
            .iter_mut()
            .filter(|e| e.license.key_id == key_id)
        {
            entry.revoked = Some(Revoked {
                reason: reason.to_owned(),
                revoked_at: now,
            });
            found = true;
        }
        found
    }

    /// Counts at `now`, with "expiring soon" meaning within `soon_s` seconds.
    pub fn stats(&self, now: i64, soon_s: i64) -> LedgerStats {
        let mut s = LedgerStats {
            customers: self.customers.len(),
            licenses: self.licenses.len(),
            ..LedgerStats::default()
        };
        for entry in &self.licenses {
            match entry.status_at(now, soon_s) {
                LedgerStatus::Active => s.active += 1,
                LedgerStatus::ExpiringSoon => s.expiring_soon += 1,
                LedgerStatus::NotYetValid => s.not_yet_valid += 1,
                LedgerStatus::Expired => s.expired += 1,
                LedgerStatus::Revoked => s.revoked += 1,
            }
        }
        s.valid = s.active + s.expiring_soon;
        s
    }

    /// Licenses due for renewal: not revoked, valid at `now` or not yet valid, expiring within
    /// `within_s` seconds; soonest first. A customer's license is left out when the same customer
    /// holds another unrevoked license (same tier) that expires later, i.e. it was renewed already.
    pub fn renewals(&self, now: i64, within_s: i64) -> Vec<&LedgerLicense> {
        let mut due: Vec<&LedgerLicense> = self
            .licenses
            .iter()
            .filter(|e| e.revoked.is_none())
            .filter(|e| e.license.expires_at > now && e.license.expires_at - now <= within_s)
            .filter(|e| {
                !self.licenses.iter().any(|o| {
                    o.revoked.is_none()
                        && o.license.customer_id == e.license.customer_id
                        && o.license.tier == e.license.tier
                        && o.license.expires_at > e.license.expires_at
                })
            })
            .collect();
        due.sort_by(|a, b| {
            (a.license.expires_at, &a.license.key_id)
                .cmp(&(b.license.expires_at, &b.license.key_id))
        });
        due
    }

    /// The licenses as CSV (RFC 4180, one header line) or JSON (an array), with each license's
    /// status at `now` and times as RFC 3339.
    pub fn export(&self, format: ExportFormat, now: i64, soon_s: i64) -> String {
        match format {
            ExportFormat::Json => {
                let rows: Vec<serde_json::Value> = self
                    .licenses
                    .iter()
                    .map(|e| {
                        let l = &e.license;
                        serde_json::json!({
                            "key_id": l.key_id,
                            "customer_id": l.customer_id,
                            "customer_name": self.customer(&l.customer_id).map(|c| c.name.as_str()),
                            "tier": l.tier,
                            "status": e.status_at(now, soon_s).as_str(),
                            "issued_at": rfc3339(l.issued_at),
                            "not_before": rfc3339(l.not_before),
                            "expires_at": rfc3339(l.expires_at),
                            "features": l.features,
                            "max_instances": l.limits.max_instances,
                            "max_services": l.limits.max_services,
                            "max_requests_per_day": l.limits.max_requests_per_day,
                            "signing_key_id": l.signing_key_id,
                            "revoked_reason": e.revoked.as_ref().map(|r| r.reason.as_str()),
                            "revoked_at": e.revoked.as_ref().map(|r| rfc3339(r.revoked_at)),
                            "key": e.key,
                        })
                    })
                    .collect();
                let mut text = serde_json::to_string_pretty(&rows).unwrap_or_else(|_| "[]".into());
                text.push('\n');
                text
            }
            ExportFormat::Csv => {
                let mut out = String::from(
                    "key_id,customer_id,customer_name,tier,status,issued_at,not_before,expires_at,features,max_instances,max_services,max_requests_per_day,signing_key_id,revoked_reason,revoked_at\r\n",
                );
                let opt = |v: Option<u64>| v.map(|n| n.to_string()).unwrap_or_default();
                for e in &self.licenses {
                    let l = &e.license;
                    let fields = [
                        l.key_id.clone(),
                        l.customer_id.clone(),
                        self.customer(&l.customer_id)
                            .map(|c| c.name.clone())
                            .unwrap_or_default(),
                        l.tier.clone(),
                        e.status_at(now, soon_s).as_str().to_owned(),
                        rfc3339(l.issued_at),
                        rfc3339(l.not_before),
                        rfc3339(l.expires_at),
                        l.features.join(";"),
                        opt(l.limits.max_instances),
                        opt(l.limits.max_services),
                        opt(l.limits.max_requests_per_day),
                        l.signing_key_id.clone(),
                        e.revoked
                            .as_ref()
                            .map(|r| r.reason.clone())
                            .unwrap_or_default(),
                        e.revoked
                            .as_ref()
                            .map(|r| rfc3339(r.revoked_at))
                            .unwrap_or_default(),
                    ];
                    let line: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
                    out.push_str(&line.join(","));
                    out.push_str("\r\n");
                }
                out
            }
        }
    }
}

/// A CSV field, quoted when it holds a comma, quote or line break; a leading `=`, `+`, `-` or `@`
/// is prefixed with `'` so spreadsheets do not read free text as a formula.
fn csv_field(field: &str) -> String {
    let field = if field.starts_with(['=', '+', '-', '@']) {
        format!("'{field}")
    } else {
        field.to_owned()
    };
    if field.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field
    }
}

/// Unix seconds as RFC 3339 (UTC); the number itself when out of range.
pub(crate) fn rfc3339(t: i64) -> String {
    OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| t.to_string())
}

/// Writes `bytes` to `path` through a temporary file in the same directory: write, fsync, rename
/// over `path`, fsync the directory. Readers see the old file or the new one, never a mix. The file
/// gets mode 0644 on Unix.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_atomically_with_mode(path, bytes, 0o644)
}

fn write_atomically_with_mode(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut options = fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            options.mode(mode);
        }
        #[cfg(not(unix))]
        let _ = mode;
        let mut file = options.open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        #[cfg(unix)]
        fs::File::open(&dir)?.sync_all()?;
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::license::Limits;

    const NOW: i64 = 1_800_000_000;
    const DAY: i64 = 86_400;

    fn license(id: &str, customer: &str, expires_in_days: i64) -> License {
        License {
            key_id: id.into(),
            customer_id: customer.into(),
            tier: "pro".into(),
            issued_at: NOW - 10 * DAY,
            not_before: NOW - 10 * DAY,
            expires_at: NOW + expires_in_days * DAY,
            features: vec!["a".into(), "b".into()],
            limits: Limits {
                max_instances: Some(2),
                max_services: None,
                max_requests_per_day: None,
            },
            signing_key_id: "0123456789abcdef".into(),
        }
    }

    fn sample() -> Ledger {
        let mut l = Ledger::default();
        l.add_customer("acme", "ACME, \"Inc\"", Some("ops@acme.test"), NOW)
            .unwrap();
        l.add_customer("beta", "Beta", None, NOW).unwrap();
        l.record_issued(
            license("aaaaaaaaaaaaaaaa", "acme", 100),
            "CAIO-v2-a.b".into(),
        )
        .unwrap();
        l.record_issued(
            license("bbbbbbbbbbbbbbbb", "acme", 10),
            "CAIO-v2-c.d".into(),
        )
        .unwrap();
        l.record_issued(license("cccccccccccccccc", "beta", 5), "CAIO-v2-e.f".into())
            .unwrap();
        l.record_issued(
            license("dddddddddddddddd", "beta", -1),
            "CAIO-v2-g.h".into(),
        )
        .unwrap();
        l.record_issued(
            license("eeeeeeeeeeeeeeee", "beta", 20),
            "CAIO-v2-i.j".into(),
        )
        .unwrap();
        assert!(l.record_revoked("eeeeeeeeeeeeeeee", "=cmd|' /C calc'!A0", NOW));
        assert!(!l.record_revoked("ffffffffffffffff", "x", NOW));
        l
    }

    #[test]
    fn customers_are_checked() {
        let mut l = sample();
        assert!(matches!(
            l.add_customer("acme", "Again", None, NOW),
            Err(LedgerError::DuplicateCustomer(_))
        ));
        assert!(matches!(
            l.add_customer("bad id", "X", None, NOW),
            Err(LedgerError::Invalid { .. })
        ));
        assert!(matches!(
            l.add_customer("x", " ", None, NOW),
            Err(LedgerError::Invalid { .. })
        ));
        assert!(matches!(
            l.record_issued(license("ffffffffffffffff", "nobody", 1), String::new()),
            Err(LedgerError::UnknownCustomer(_))
        ));
        assert_eq!(
            l.customers
                .iter()
                .map(|c| c.id.as_str())
                .collect::<Vec<_>>(),
            ["acme", "beta"]
        );
    }

    #[test]
    fn stats_classify_every_license() {
        let s = sample().stats(NOW, 30 * DAY);
        assert_eq!(
            s,
            LedgerStats {
                customers: 2,
                licenses: 5,
                valid: 3,
                active: 1,
                expiring_soon: 2,
                not_yet_valid: 0,
                expired: 1,
                revoked: 1
            }
        );
    }

    #[test]
    fn renewals_are_soonest_first_and_skip_renewed() {
        let l = sample();
        let due: Vec<&str> = l
            .renewals(NOW, 30 * DAY)
            .iter()
            .map(|e| e.license.key_id.as_str())
            .collect();
        // bbbb (acme, 10 days) is renewed by aaaa (acme, 100 days); eeee is revoked; dddd expired.
        assert_eq!(due, ["cccccccccccccccc"]);
        let due: Vec<&str> = l
            .renewals(NOW, 200 * DAY)
            .iter()
            .map(|e| e.license.key_id.as_str())
            .collect();
        assert_eq!(due, ["cccccccccccccccc", "aaaaaaaaaaaaaaaa"]);
    }

    #[test]
    fn export_csv_and_json() {
        let l = sample();
        let csv = l.export(ExportFormat::Csv, NOW, 30 * DAY);
        let lines: Vec<&str> = csv.split("\r\n").collect();
        assert_eq!(lines.len(), 7, "{csv}");
        assert!(lines[0].starts_with("key_id,customer_id,customer_name,tier,status,"));
        assert!(
            lines[1].starts_with("aaaaaaaaaaaaaaaa,acme,\"ACME, \"\"Inc\"\"\",pro,active,"),
            "{}",
            lines[1]
        );
        assert!(
            lines[1].contains(",a;b,2,,,0123456789abcdef,,"),
            "{}",
            lines[1]
        );
        assert!(
            lines[5].contains(",revoked,") && lines[5].contains("'=cmd"),
            "{}",
            lines[5]
        );
        let json: serde_json::Value =
            serde_json::from_str(&l.export(ExportFormat::Json, NOW, 30 * DAY)).unwrap();
        assert_eq!(json.as_array().unwrap().len(), 5);
        assert_eq!(json[2]["status"], "expiring_soon");
        assert_eq!(json[3]["status"], "expired");
        assert_eq!(json[0]["customer_name"], "ACME, \"Inc\"");
        assert_eq!(json[0]["expires_at"], "2027-04-25T08:00:00Z");
    }

    #[test]
    fn save_and_load_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.json");
        assert_eq!(Ledger::load(&path).unwrap(), Ledger::default());
        let l = sample();
        l.save(&path).unwrap();
        assert_eq!(Ledger::load(&path).unwrap(), l);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            assert_eq!(
                fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        // No temporary file is left behind.
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [std::ffi::OsString::from("ledger.json")]);
        fs::write(&path, "{\"version\":9,\"customers\":[],\"licenses\":[]}").unwrap();
        assert!(matches!(
            Ledger::load(&path),
            Err(LedgerError::Format { .. })
        ));
        fs::write(&path, "garbage").unwrap();
        assert!(matches!(
            Ledger::load(&path),
            Err(LedgerError::Format { .. })
        ));
        // Writing into a missing directory fails and leaves nothing.
        assert!(l.save(&dir.path().join("missing/ledger.json")).is_err());
    }
}
