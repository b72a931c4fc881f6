//! License enforcement: the key is verified once (at start or activation) with the vendor's
//! public key only; every routed or executed request then costs one read of the verified
//! license, a clock comparison and a counter increment.
//!
//! Modes (`license.enforcement`): `off` checks nothing; `permissive` lets everything through and
//! marks requests without a valid license with `x-caio-license-warning`, a log line (at most one a
//! minute) and `caio_license_warnings_total`; `enforced` answers routing and execution with
//! `403 LICENSE_INVALID` (health, readiness, metrics and the licensing endpoints keep working).
//! An expired license works for `grace_days` more, with the warning, before it counts as
//! invalid. Entitlements: `max_services` caps the registry (`403 LICENSE_LIMIT`),
//! `max_requests_per_day` meters routed requests per UTC day, `max_instances` counts the server
//! instances that activated the key (this process; shared through Redis in cluster mode).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use anyhow::{Context, anyhow};
use caio_config::{LicenseEnforcement, LicenseSettings};
use caio_licensing::{License, LicenseError, LicenseStatus, PublicKeySet, VerifiedRevocationList};
use serde_json::{Value, json};

use crate::error::ApiError;

/// The verified license in force, if any, and why there is none otherwise.
#[derive(Debug, Clone)]
struct Current {
    license: Option<Arc<License>>,
    /// Why the last key was refused (or that none was given).
    problem: Option<(String, String)>,
}

/// What a request may do under the license.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Go on.
    Allow,
    /// Go on, with this warning (permissive mode, or an expired license in its grace period).
    Warn(String),
}

/// Why a key was not activated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The key itself: malformed, forged, expired, revoked, …
    #[error("{0}")]
    License(#[from] LicenseError),
    /// The key is valid but already active on as many instances as it allows.
    #[error("the license allows {max} server instances and {active} have activated it")]
    Instances {
        /// The limit.
        max: u64,
        /// Instances that activated it.
        active: usize,
    },
}

impl Refused {
    /// A stable reason code.
    pub fn code(&self) -> &'static str {
        match self {
            Refused::License(e) => e.code(),
            Refused::Instances { .. } => "max_instances",
        }
    }
}

/// The server's license state.
#[derive(Debug)]
pub struct Licensing {
    mode: LicenseEnforcement,
    grace_s: u64,
    keys: PublicKeySet,
    revocations: Option<VerifiedRevocationList>,
    current: RwLock<Current>,
    /// This process.
    pub instance_id: String,
    /// Instances that activated each license id (memory now; Redis in cluster mode).
    activations: Mutex<BTreeMap<String, BTreeSet<String>>>,
    /// (UTC day number, requests routed that day).
    meter: Mutex<(u64, u64)>,
    last_warning_log_s: AtomicU64,
    warnings: AtomicU64,
}

fn now_s() -> i64 {
    i64::try_from(caio_trace::now_ms() / 1000).unwrap_or(i64::MAX)
}

/// Reads the public key setting: PEM text, or a path to a PEM file.
fn read_public_keys(setting: &str) -> anyhow::Result<PublicKeySet> {
    let pem = if setting.trim_start().starts_with("-----BEGIN") {
        setting.to_owned()
    } else {
        std::fs::read_to_string(setting)
            .with_context(|| format!("license.public_key: reading {setting}"))?
    };
    PublicKeySet::from_pems([pem.as_str()]).map_err(|e| anyhow!("license.public_key: {e}"))
}

impl Licensing {
    /// The state the settings describe. A key that does not verify is not an error here: the
    /// server starts, and (when enforced) refuses routing, saying why.
    pub fn new(settings: &LicenseSettings) -> anyhow::Result<Licensing> {
        let keys = match &settings.public_key {
            Some(p) => read_public_keys(p)?,
            None => PublicKeySet::new(),
        };
        let revocations = match &settings.revocations {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("license.revocations: reading {}", path.display()))?;
                Some(
                    VerifiedRevocationList::verify(&text, &keys)
                        .map_err(|e| anyhow!("license.revocations ({}): {e}", path.display()))?,
                )
            }
            None => None,
        };
        let licensing = Licensing {
            mode: settings.enforcement,
            grace_s: settings.grace_days.saturating_mul(86_400),
            keys,
            revocations,
            current: RwLock::new(Current {
                license: None,
                problem: Some(("missing".into(), "no license key is configured".into())),
            }),
            instance_id: crate::secrets::generate()
                .map_err(|e| anyhow!(e))?
                .chars()
                .take(16)
                .collect(),
            activations: Mutex::new(BTreeMap::new()),
            meter: Mutex::new((0, 0)),
            last_warning_log_s: AtomicU64::new(0),
            warnings: AtomicU64::new(0),
        };
        if let Some(key) = &settings.key {
            match licensing.activate(key.expose()) {
                Ok(l) => {
                    tracing::info!(customer = %l.customer_id, tier = %l.tier, license = %l.key_id, "license activated")
                }
                Err(e) => {
                    tracing::warn!(reason = e.code(), error = %e, "license key refused");
                    licensing.refused(&e);
                }
            }
        }
        Ok(licensing)
    }

    /// The enforcement mode.
    pub fn mode(&self) -> LicenseEnforcement {
        self.mode
    }

    /// Verifies `key` and, when it is usable (valid, or expired within grace), makes it the
    /// license in force for this instance. A refused key leaves the current license as it was.
    pub fn activate(&self, key: &str) -> Result<Arc<License>, Refused> {
        let license = self.check(key)?;
        self.install(&license)?;
        Ok(license)
    }

    /// Verifies a key (signature, revocation list, validity period) without activating it.
    pub fn check(&self, key: &str) -> Result<Arc<License>, Refused> {
        let key = key.trim();
        let license = caio_licensing::decode_verified(key, &self.keys)?;
        if let Some(entry) = self
            .revocations
            .as_ref()
            .and_then(|r| r.find(&license.key_id))
        {
            return Err(LicenseError::Revoked {
                key_id: license.key_id.clone(),
                reason: entry.reason.clone(),
            }
            .into());
        }
        match license.status_at(now_s(), self.grace_s) {
            LicenseStatus::NotYetValid => {
                return Err(LicenseError::NotYetValid {
                    not_before: license.not_before,
                }
                .into());
            }
            LicenseStatus::Expired => {
                return Err(LicenseError::Expired {
                    expires_at: license.expires_at,
                }
                .into());
            }
            LicenseStatus::Valid | LicenseStatus::ExpiredInGrace { .. } => {}
        }
        Ok(Arc::new(license))
    }

    /// Activates a key [`check`](Self::check) accepted, unless this instance would exceed the
    /// license's `max_instances`.
    pub fn install(&self, license: &Arc<License>) -> Result<(), Refused> {
        {
            let mut activations = self
                .activations
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let instances = activations.entry(license.key_id.clone()).or_default();
            let with_this = instances.len() + usize::from(!instances.contains(&self.instance_id));
            if let Some(max) = license.limits.max_instances
                && with_this as u64 > max
            {
                return Err(Refused::Instances {
                    max,
                    active: instances.len(),
                });
            }
            instances.insert(self.instance_id.clone());
        }
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Current {
            license: Some(Arc::clone(license)),
            problem: None,
        };
        Ok(())
    }

    /// Records why the configured key was refused (for status).
    pub fn refused(&self, e: &Refused) {
        let mut c = self.current.write().unwrap_or_else(PoisonError::into_inner);
        if c.license.is_none() {
            c.problem = Some((e.code().to_owned(), e.to_string()));
        }
    }

    fn current(&self) -> Current {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The license in force, when it is usable now.
    pub fn usable(&self) -> Option<Arc<License>> {
        self.current()
            .license
            .filter(|l| l.status_at(now_s(), self.grace_s).is_usable())
    }

    fn invalid_reason(&self, now: i64) -> Option<(String, String)> {
        let c = self.current();
        match &c.license {
            None => c
                .problem
                .or_else(|| Some(("missing".into(), "no license".into()))),
            Some(l) => match l.status_at(now, self.grace_s) {
                LicenseStatus::Valid | LicenseStatus::ExpiredInGrace { .. } => None,
                LicenseStatus::Expired => Some((
                    "expired".into(),
                    format!(
                        "the license expired at {} and its {}-day grace period is over",
                        l.expires_at,
                        self.grace_s / 86_400
                    ),
                )),
                LicenseStatus::NotYetValid => Some((
                    "not_yet_valid".into(),
                    format!("the license is not valid before {}", l.not_before),
                )),
            },
        }
    }

    fn warn(&self, message: String) -> Verdict {
        self.warnings.fetch_add(1, Ordering::Relaxed);
        let now = u64::try_from(now_s()).unwrap_or(0);
        let last = self.last_warning_log_s.load(Ordering::Relaxed);
        if now >= last + 60
            && self
                .last_warning_log_s
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(warning = %message, "license");
        }
        Verdict::Warn(message)
    }

    /// The check of a routed or executed request: validity, then the daily meter.
    pub fn check_request(&self) -> Result<Verdict, ApiError> {
        if self.mode == LicenseEnforcement::Off {
            return Ok(Verdict::Allow);
        }
        let now = now_s();
        if let Some((code, message)) = self.invalid_reason(now) {
            return match self.mode {
                LicenseEnforcement::Enforced => Err(ApiError::new(
                    "LICENSE_INVALID",
                    format!("no valid license: {message}"),
                )
                .with_details(json!({ "reason": code }))),
                _ => Ok(self.warn(format!("no valid license ({code}): {message}"))),
            };
        }
        let mut verdict = Verdict::Allow;
        let license = self.current().license;
        if let Some(l) = &license {
            if let LicenseStatus::ExpiredInGrace { grace_ends_at } = l.status_at(now, self.grace_s)
            {
                verdict = self.warn(format!(
                    "the license expired at {}; it stops working at {grace_ends_at} (unix seconds)",
                    l.expires_at
                ));
            }
            if let Some(max) = l.limits.max_requests_per_day {
                let today = u64::try_from(now / 86_400).unwrap_or(0);
                let n = {
                    let mut m = self.meter.lock().unwrap_or_else(PoisonError::into_inner);
                    if m.0 != today {
                        *m = (today, 0);
                    }
                    m.1 += 1;
                    m.1
                };
                if n > max {
                    let message = format!(
                        "the license allows {max} routed requests per UTC day; this is request {n}"
                    );
                    return match self.mode {
                        LicenseEnforcement::Enforced => {
                            Err(ApiError::new("LICENSE_LIMIT", message).with_details(json!({
                                "limit": "max_requests_per_day",
                                "allowed": max,
                            })))
                        }
                        _ => Ok(self.warn(message)),
                    };
                }
            }
        }
        Ok(verdict)
    }

    /// Whether the license grants an optional capability (`execution`: calling services through
    /// `/api/v1/execute` and the `/v1` front door). Only a valid license is asked; without one,
    /// [`check_request`](Self::check_request) has already decided.
    pub fn check_feature(&self, feature: &str) -> Result<Verdict, ApiError> {
        if self.mode == LicenseEnforcement::Off {
            return Ok(Verdict::Allow);
        }
        let Some(license) = self.usable() else {
            return Ok(Verdict::Allow);
        };
        if license.has_feature(feature) {
            return Ok(Verdict::Allow);
        }
        let message = format!("the license does not include the `{feature}` feature");
        match self.mode {
            LicenseEnforcement::Enforced => Err(ApiError::new("LICENSE_LIMIT", message)
                .with_details(json!({"limit": "features", "feature": feature}))),
            _ => Ok(self.warn(message)),
        }
    }

    /// Whether one more service may be registered when `registered` are.
    pub fn check_services(&self, registered: usize) -> Result<Verdict, ApiError> {
        if self.mode == LicenseEnforcement::Off {
            return Ok(Verdict::Allow);
        }
        let Some(max) = self.current().license.and_then(|l| l.limits.max_services) else {
            return Ok(Verdict::Allow);
        };
        if (registered as u64) < max {
            return Ok(Verdict::Allow);
        }
        let message = format!("the license allows {max} services; {registered} are registered");
        match self.mode {
            LicenseEnforcement::Enforced => Err(ApiError::new("LICENSE_LIMIT", message)
                .with_details(json!({"limit": "max_services", "allowed": max}))),
            _ => Ok(self.warn(message)),
        }
    }

    /// Warnings given so far (the metric).
    pub fn warnings(&self) -> u64 {
        self.warnings.load(Ordering::Relaxed)
    }

    /// What `GET /api/v1/licensing/status` shows (never the key itself).
    pub fn status(&self) -> Value {
        let now = now_s();
        let c = self.current();
        let invalid = self.invalid_reason(now);
        let license = c.license.as_ref().map(|l| {
            let state = match l.status_at(now, self.grace_s) {
                LicenseStatus::Valid => "valid",
                LicenseStatus::ExpiredInGrace { .. } => "expired_in_grace",
                LicenseStatus::Expired => "expired",
                LicenseStatus::NotYetValid => "not_yet_valid",
            };
            let instances = self
                .activations
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&l.key_id)
                .map_or(0, BTreeSet::len);
            json!({
                "state": state,
                "license_id": l.key_id,
                "customer_id": l.customer_id,
                "tier": l.tier,
                "issued_at": l.issued_at,
                "not_before": l.not_before,
                "expires_at": l.expires_at,
                "seconds_left": l.seconds_left(now),
                "features": l.features,
                "limits": l.limits,
                "usage": {
                    "instances": instances,
                    "requests_today": self.meter.lock().unwrap_or_else(PoisonError::into_inner).1,
                },
            })
        });
        json!({
            "enforcement": match self.mode {
                LicenseEnforcement::Off => "off",
                LicenseEnforcement::Permissive => "permissive",
                LicenseEnforcement::Enforced => "enforced",
            },
            "valid": invalid.is_none(),
            "reason": invalid.as_ref().map(|(code, _)| code),
            "message": invalid.map(|(_, m)| m),
            "instance_id": self.instance_id,
            "grace_days": self.grace_s / 86_400,
            "trusted_signing_keys": self.keys.ids().collect::<Vec<_>>(),
            "revocation_list": self.revocations.is_some(),
            "license": license,
        })
    }
}
