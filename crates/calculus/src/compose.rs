//! Step 7: guarantee composition over a chain s1 → … → sn: accuracy = min, latency = sum,
//! cost = sum, determinism = and, privacy = weakest (locality and encryption).

use std::sync::Arc;

use caio_contracts::decision::ComposedGuarantees;
use caio_contracts::model::{DataLocality, ServiceSpec};

/// The guarantees of one stage.
pub fn compose_one(id: Arc<str>, spec: &ServiceSpec, cost: f64) -> ComposedGuarantees {
    let g = &spec.guarantees;
    ComposedGuarantees {
        services: vec![id],
        accuracy: g
            .get("accuracy")
            .and_then(|b| b.range())
            .and_then(|r| r.min),
        latency_ms: g
            .get("latency_ms")
            .and_then(|b| b.range())
            .and_then(|r| r.max),
        cost,
        determinism: g.get("determinism").and_then(|b| b.flag()).unwrap_or(false),
        data_locality: spec.privacy.data_locality,
        encryption: spec.privacy.encryption,
    }
}

fn weaker(a: DataLocality, b: DataLocality) -> DataLocality {
    // The enum is declared from most to least private, so the weaker is the larger.
    a.max(b)
}

/// Composes two stages (or chains) in order. Associative; an undeclared accuracy or latency on any
/// stage makes the composed one undeclared.
pub fn compose(a: &ComposedGuarantees, b: &ComposedGuarantees) -> ComposedGuarantees {
    let mut services = a.services.clone();
    services.extend(b.services.iter().cloned());
    ComposedGuarantees {
        services,
        accuracy: a.accuracy.zip(b.accuracy).map(|(x, y)| x.min(y)),
        latency_ms: a.latency_ms.zip(b.latency_ms).map(|(x, y)| x + y),
        cost: a.cost + b.cost,
        determinism: a.determinism && b.determinism,
        data_locality: weaker(a.data_locality, b.data_locality),
        encryption: a.encryption && b.encryption,
    }
}

/// Composes a whole chain; `None` for an empty one.
pub fn compose_chain(stages: &[ComposedGuarantees]) -> Option<ComposedGuarantees> {
    let (first, rest) = stages.split_first()?;
    Some(rest.iter().fold(first.clone(), |acc, s| compose(&acc, s)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn stage() -> impl Strategy<Value = ComposedGuarantees> {
        (
            "[a-z]{1,6}",
            prop::option::of(0.0f64..=1.0),
            prop::option::of(0.0f64..10_000.0),
            0.0f64..1.0,
            any::<bool>(),
            prop::sample::select(vec![
                DataLocality::Local,
                DataLocality::OnDevice,
                DataLocality::Region,
                DataLocality::External,
            ]),
            any::<bool>(),
        )
            .prop_map(
                |(id, accuracy, latency_ms, cost, determinism, data_locality, encryption)| {
                    ComposedGuarantees {
                        services: vec![Arc::from(id)],
                        accuracy,
                        latency_ms,
                        cost,
                        determinism,
                        data_locality,
                        encryption,
                    }
                },
            )
    }

    proptest! {
        #[test]
        fn composition_is_associative(a in stage(), b in stage(), c in stage()) {
            let left = compose(&compose(&a, &b), &c);
            let right = compose(&a, &compose(&b, &c));
            prop_assert_eq!(&left.services, &right.services);
            prop_assert_eq!(left.accuracy, right.accuracy);
            prop_assert_eq!(left.determinism, right.determinism);
            prop_assert_eq!(left.data_locality, right.data_locality);
            prop_assert_eq!(left.encryption, right.encryption);
            // Sums are associative up to floating-point rounding.
            match (left.latency_ms, right.latency_ms) {
                (Some(l), Some(r)) => prop_assert!((l - r).abs() <= 1e-9 * l.abs().max(1.0)),
                (l, r) => prop_assert_eq!(l, r),
            }
            prop_assert!((left.cost - right.cost).abs() <= 1e-12);
        }

        #[test]
        fn adding_a_stage_never_improves_accuracy_or_latency(a in stage(), b in stage()) {
            let ab = compose(&a, &b);
            if let (Some(x), Some(y)) = (a.accuracy, ab.accuracy) { prop_assert!(y <= x); }
            if let (Some(x), Some(y)) = (a.latency_ms, ab.latency_ms) { prop_assert!(y >= x); }
            prop_assert!(ab.cost >= a.cost);
            prop_assert!(ab.data_locality >= a.data_locality);
            prop_assert!(!ab.determinism || a.determinism);
        }
    }
}
