//! The verified license: what the server reads (tier, features, limits, validity).

use serde::{Deserialize, Serialize};

/// Usage limits; `None` means unlimited.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    pub max_instances: Option<u64>,
    pub max_services: Option<u64>,
    pub max_requests_per_day: Option<u64>,
}

/// A license's standing at a moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LicenseStatus {
    /// Before `not_before`.
    NotYetValid,
    /// Within `[not_before, expires_at)`.
    Valid,
    /// Past `expires_at`, but within the grace period, which ends at `grace_ends_at`.
    ExpiredInGrace { grace_ends_at: i64 },
    /// Past `expires_at` and the grace period.
    Expired,
}

impl LicenseStatus {
    /// Whether the licensed features may be used (valid, or expired within grace).
    pub fn is_usable(self) -> bool {
        matches!(
            self,
            LicenseStatus::Valid | LicenseStatus::ExpiredInGrace { .. }
        )
    }
}

/// The contents of a license key (a verified one, unless it came from
/// [`decode_unverified`](crate::decode_unverified)). Times are unix seconds (UTC).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct License {
    /// This license's id (16 lowercase hex digits); what revocation lists name.
    pub key_id: String,
    pub customer_id: String,
    pub tier: String,
    pub issued_at: i64,
    pub not_before: i64,
    pub expires_at: i64,
    /// Sorted, without duplicates.
    pub features: Vec<String>,
    pub limits: Limits,
    /// The id of the public key that verifies this license.
    pub signing_key_id: String,
}

impl License {
    /// Whether the license grants `feature`.
    pub fn has_feature(&self, feature: &str) -> bool {
        self.features.iter().any(|f| f == feature)
    }

    /// The standing at `now` (unix seconds) with a grace period of `grace_s` seconds after expiry.
    pub fn status_at(&self, now: i64, grace_s: u64) -> LicenseStatus {
        if now < self.not_before {
            return LicenseStatus::NotYetValid;
        }
        if now < self.expires_at {
            return LicenseStatus::Valid;
        }
        let grace_ends_at = self
            .expires_at
            .saturating_add(i64::try_from(grace_s).unwrap_or(i64::MAX));
        if now < grace_ends_at {
            LicenseStatus::ExpiredInGrace { grace_ends_at }
        } else {
            LicenseStatus::Expired
        }
    }

    /// Seconds until expiry at `now` (negative once expired).
    pub fn seconds_left(&self, now: i64) -> i64 {
        self.expires_at.saturating_sub(now)
    }
}
