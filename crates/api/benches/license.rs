//! What the license costs a routed request: `Licensing::check_request` with enforcement on, a
//! valid license and the daily meter, against enforcement off.
//!
//!     cargo bench -p caio-api --bench license
#![allow(clippy::unwrap_used, clippy::expect_used)]

use caio_api::licensing::Licensing;
use caio_config::{LicenseEnforcement, LicenseSettings, Secret};
use caio_licensing::{IssueRequest, Issuer, Limits, public_key_to_pem};
use criterion::{Criterion, criterion_group, criterion_main};

fn licensing(mode: LicenseEnforcement) -> Licensing {
    let issuer = Issuer::new(caio_licensing::generate_signing_key().unwrap());
    let now = (caio_trace::now_ms() / 1000) as i64;
    let (key, _) = issuer
        .issue(
            &IssueRequest {
                customer_id: "bench".into(),
                tier: "enterprise".into(),
                not_before: now - 10,
                expires_at: now + 86_400,
                features: vec![],
                limits: Limits {
                    max_instances: Some(4),
                    max_services: Some(1000),
                    max_requests_per_day: Some(u64::MAX / 2),
                },
            },
            now,
        )
        .unwrap();
    Licensing::new(&LicenseSettings {
        key: Some(Secret::new(&key)),
        public_key: Some(public_key_to_pem(&issuer.public_key()).unwrap()),
        revocations: None,
        enforcement: mode,
        grace_days: 7,
    })
    .unwrap()
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("license/check_request");
    for (name, mode) in [
        ("off", LicenseEnforcement::Off),
        ("enforced", LicenseEnforcement::Enforced),
    ] {
        let l = licensing(mode);
        g.bench_function(name, |b| b.iter(|| l.check_request().unwrap()));
    }
    g.finish();
    c.bench_function("license/verify_key_once", |b| {
        let issuer = Issuer::new(caio_licensing::generate_signing_key().unwrap());
        let now = (caio_trace::now_ms() / 1000) as i64;
        let (key, _) = issuer
            .issue(
                &IssueRequest {
                    customer_id: "bench".into(),
                    tier: "t".into(),
                    not_before: now - 10,
                    expires_at: now + 86_400,
                    features: vec![],
                    limits: Limits::default(),
                },
                now,
            )
            .unwrap();
        let keys = caio_licensing::PublicKeySet::from_keys([issuer.public_key()]);
        b.iter(|| caio_licensing::decode_verified(&key, &keys).unwrap());
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(2));
    targets = bench
}
criterion_main!(benches);
