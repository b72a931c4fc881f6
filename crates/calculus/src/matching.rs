//! Step 1: capabilities, guarantee bounds, constraint admission and the budget.

use caio_contracts::decision::Check;
use caio_contracts::model::{Bound, ConstraintValue, ServiceSpec};
use caio_contracts::request::{RouteRequest, Scalar};
use serde_json::{Value, json};

/// Does an offered bound satisfy a required one?
///
/// A required `min` needs an offered `min` at least as high; a required `max` needs an offered
/// `max` at least as low; a required flag needs an equal offered flag. A property the contract does
/// not declare satisfies nothing.
pub fn bound_satisfied(required: &Bound, offered: Option<&Bound>) -> bool {
    match (required, offered) {
        (Bound::Flag(r), Some(Bound::Flag(o))) => r == o,
        (Bound::Range(r), Some(Bound::Range(o))) => {
            let min_ok = match r.min {
                None => true,
                Some(rmin) => o.min.is_some_and(|omin| omin >= rmin),
            };
            let max_ok = match r.max {
                None => true,
                Some(rmax) => o.max.is_some_and(|omax| omax <= rmax),
            };
            min_ok && max_ok
        }
        _ => false,
    }
}

/// How a request constraint was judged against a contract.
#[derive(Debug, Clone, PartialEq)]
pub struct Admission {
    /// The contract key consulted (`languages`, `max_input_tokens`), if any was found.
    pub contract_key: Option<String>,
    /// The contract's value there.
    pub offered: Value,
    /// Whether the contract admits the request value.
    pub ok: bool,
}

/// Does the contract admit request constraint `key: value`?
///
/// A string `v` is admitted when the contract's list `<key>s` (or list `<key>`) contains it, or its
/// scalar `<key>` equals it. A number `n` is admitted when `n ≤ max_<key>` (and `n ≥ min_<key>` when
/// declared). A flag is admitted when the contract's `<key>` flag is equal. A key the contract does
/// not declare is not admitted.
pub fn admit(spec: &ServiceSpec, key: &str, value: &Scalar) -> Admission {
    let c = &spec.constraints;
    let none = Admission {
        contract_key: None,
        offered: Value::Null,
        ok: false,
    };
    match value {
        Scalar::Text(v) => {
            let plural = format!("{key}s");
            for k in [plural.as_str(), key] {
                match c.get(k) {
                    Some(ConstraintValue::List(items)) => {
                        return Admission {
                            contract_key: Some(k.to_owned()),
                            offered: json!(items),
                            ok: items.iter().any(|i| i == v),
                        };
                    }
                    Some(ConstraintValue::Text(t)) => {
                        return Admission {
                            contract_key: Some(k.to_owned()),
                            offered: json!(t),
                            ok: t == v,
                        };
                    }
                    _ => {}
                }
            }
            none
        }
        Scalar::Number(n) => {
            let max_key = format!("max_{key}");
            let min_key = format!("min_{key}");
            match (c.get(&max_key), c.get(&min_key)) {
                (Some(ConstraintValue::Number(max)), min) => {
                    let min_ok = match min {
                        Some(ConstraintValue::Number(m)) => n >= m,
                        _ => true,
                    };
                    Admission {
                        contract_key: Some(max_key),
                        offered: json!(max),
                        ok: n <= max && min_ok,
                    }
                }
                _ => none,
            }
        }
        Scalar::Bool(b) => match c.get(key) {
            Some(ConstraintValue::Bool(o)) => Admission {
                contract_key: Some(key.to_owned()),
                offered: json!(o),
                ok: o == b,
            },
            _ => none,
        },
    }
}

/// Estimated cost of one call: `per_request + per_1k_tokens · tokens / 1000`.
pub fn estimated_cost(spec: &ServiceSpec, input_tokens: u64) -> f64 {
    spec.cost.per_request + spec.cost.per_1k_tokens * (input_tokens as f64) / 1000.0
}

/// Input tokens for cost estimates: the request's numeric `input_tokens` constraint when given,
/// otherwise the payload's JSON size divided by four (a common rule of thumb for English text).
pub fn input_tokens(request: &RouteRequest, payload_bytes: usize) -> (u64, &'static str) {
    match request.requirements.constraints.get("input_tokens") {
        Some(Scalar::Number(n)) if *n >= 0.0 => {
            (n.ceil().min(u64::MAX as f64) as u64, "constraint")
        }
        _ => (payload_bytes.div_ceil(4) as u64, "payload"),
    }
}

/// The first matching check a service fails, without building evidence: the index of the failed
/// requirement in the order [`match_service`] checks them (guarantees, constraints, budget), and
/// the estimated cost.
pub fn first_failure(
    spec: &ServiceSpec,
    request: &RouteRequest,
    input_tokens: u64,
) -> (Option<Failure>, f64) {
    let cost = estimated_cost(spec, input_tokens);
    for (prop, required) in &request.requirements.guarantees {
        if !bound_satisfied(required, spec.guarantees.get(prop)) {
            return (Some(Failure::Guarantee), cost);
        }
    }
    for (key, value) in &request.requirements.constraints {
        if !admits(spec, key, value) {
            return (Some(Failure::Constraint), cost);
        }
    }
    if request.budget.max_cost.is_some_and(|max| cost > max) {
        return (Some(Failure::Budget), cost);
    }
    (None, cost)
}

/// Which kind of matching check failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// A guarantee bound.
    Guarantee,
    /// A request constraint.
    Constraint,
    /// The budget.
    Budget,
}

impl Failure {
    /// The rejection reason code.
    pub fn reason(self) -> &'static str {
        match self {
            Failure::Guarantee => "guarantee_unmet",
            Failure::Constraint => "constraint_unadmitted",
            Failure::Budget => "over_budget",
        }
    }
}

/// A sentence naming the first matching check a service fails and the values compared (empty when
/// it fails none). Builds only that one sentence.
pub fn describe_failure(spec: &ServiceSpec, request: &RouteRequest, input_tokens: u64) -> String {
    // One buffer, serde_json writing the values straight into it: this runs once per rejected
    // service on the routing path.
    let mut out: Vec<u8> = Vec::with_capacity(96);
    let json = |out: &mut Vec<u8>, v: &dyn erased::Json| v.write_to(out);
    for (prop, required) in &request.requirements.guarantees {
        let offered = spec.guarantees.get(prop);
        if !bound_satisfied(required, offered) {
            out.extend_from_slice(b"guarantee:");
            out.extend_from_slice(prop.as_bytes());
            out.extend_from_slice(b": required ");
            json(&mut out, required);
            out.extend_from_slice(b", offered ");
            match offered {
                Some(o) => json(&mut out, o),
                None => out.extend_from_slice(b"null"),
            }
            return String::from_utf8(out).unwrap_or_default();
        }
    }
    for (key, value) in &request.requirements.constraints {
        if !admits(spec, key, value) {
            let a = admit(spec, key, value);
            out.extend_from_slice(b"constraint:");
            out.extend_from_slice(key.as_bytes());
            out.extend_from_slice(b": required ");
            json(&mut out, value);
            out.extend_from_slice(b", offered ");
            json(&mut out, &a.offered);
            return String::from_utf8(out).unwrap_or_default();
        }
    }
    let cost = estimated_cost(spec, input_tokens);
    match request.budget.max_cost {
        Some(max) if cost > max => {
            format!("budget: required {{\"max_cost\":{max}}}, offered {cost}")
        }
        _ => String::new(),
    }
}

mod erased {
    /// Anything serializable, written as compact JSON.
    pub trait Json {
        fn write_to(&self, out: &mut Vec<u8>);
    }
    impl<T: serde::Serialize> Json for T {
        fn write_to(&self, out: &mut Vec<u8>) {
            let _ = serde_json::to_writer(out, self);
        }
    }
}

/// [`admit`] without the evidence: no allocation on the common paths.
pub fn admits(spec: &ServiceSpec, key: &str, value: &Scalar) -> bool {
    let c = &spec.constraints;
    match value {
        Scalar::Text(v) => {
            // `<key>s` without allocating: constraint keys are short.
            let mut buf = [0u8; 128];
            let plural = (key.len() < buf.len())
                .then(|| {
                    buf[..key.len()].copy_from_slice(key.as_bytes());
                    buf[key.len()] = b's';
                    std::str::from_utf8(&buf[..=key.len()]).ok()
                })
                .flatten();
            for k in plural.into_iter().chain([key]) {
                match c.get(k) {
                    Some(ConstraintValue::List(items)) => return items.iter().any(|i| i == v),
                    Some(ConstraintValue::Text(t)) => return t == v,
                    _ => {}
                }
            }
            false
        }
        Scalar::Number(_) | Scalar::Bool(_) => admit(spec, key, value).ok,
    }
}

fn bound_json(b: Option<&Bound>) -> Value {
    match b {
        None => Value::Null,
        Some(b) => serde_json::to_value(b).unwrap_or(Value::Null),
    }
}

/// Runs every matching check for a service that has all required capabilities, in a fixed order
/// (guarantees, constraints, budget), stopping at the first failure. Returns the checks made and
/// the estimated cost.
pub fn match_service(
    spec: &ServiceSpec,
    request: &RouteRequest,
    input_tokens: u64,
) -> (Vec<Check>, f64) {
    let mut checks = Vec::with_capacity(
        request.requirements.guarantees.len() + request.requirements.constraints.len() + 1,
    );
    for (prop, required) in &request.requirements.guarantees {
        let offered = spec.guarantees.get(prop);
        let ok = bound_satisfied(required, offered);
        checks.push(Check {
            name: format!("guarantee:{prop}"),
            required: bound_json(Some(required)),
            offered: bound_json(offered),
            ok,
        });
        if !ok {
            return (checks, estimated_cost(spec, input_tokens));
        }
    }
    for (key, value) in &request.requirements.constraints {
        // `input_tokens` feeds the cost estimate and is also admitted against `max_input_tokens`.
        let a = admit(spec, key, value);
        let ok = a.ok;
        checks.push(Check {
            name: format!("constraint:{key}"),
            required: serde_json::to_value(value).unwrap_or(Value::Null),
            offered: a.offered,
            ok,
        });
        if !ok {
            return (checks, estimated_cost(spec, input_tokens));
        }
    }
    let cost = estimated_cost(spec, input_tokens);
    if let Some(max_cost) = request.budget.max_cost {
        checks.push(Check {
            name: "budget".to_owned(),
            required: json!({ "max_cost": max_cost }),
            offered: json!(cost),
            ok: cost <= max_cost,
        });
    }
    (checks, cost)
}

#[cfg(test)]
mod tests {
    use super::*;
    use caio_contracts::model::Range;

    fn range(min: Option<f64>, max: Option<f64>) -> Bound {
        Bound::Range(Range { min, max })
    }

    #[test]
    fn bounds() {
        let check = |r: Bound, o: Option<Bound>, expect: bool| {
            assert_eq!(bound_satisfied(&r, o.as_ref()), expect, "{r:?} vs {o:?}");
        };
        check(range(Some(0.9), None), Some(range(Some(0.95), None)), true);
        check(range(Some(0.9), None), Some(range(Some(0.85), None)), false);
        check(range(Some(0.9), None), Some(range(None, Some(1.0))), false);
        check(
            range(None, Some(200.0)),
            Some(range(None, Some(120.0))),
            true,
        );
        check(
            range(None, Some(100.0)),
            Some(range(None, Some(120.0))),
            false,
        );
        check(
            range(None, Some(100.0)),
            Some(range(None, Some(100.0))),
            true,
        );
        check(Bound::Flag(true), Some(Bound::Flag(true)), true);
        check(Bound::Flag(true), Some(Bound::Flag(false)), false);
        check(Bound::Flag(true), Some(range(Some(1.0), None)), false);
        check(range(Some(0.1), None), None, false);
        check(
            range(Some(0.5), Some(0.9)),
            Some(range(Some(0.6), Some(0.8))),
            true,
        );
    }
}
