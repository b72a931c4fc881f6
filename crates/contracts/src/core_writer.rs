//! A direct RFC 8785 writer for [`DecisionCore`], the one value CAIO hashes on every routing
//! decision.
//!
//! Going through serde costs a formatter callback per token; this writer emits the bytes itself,
//! members in canonical order, and so hashes a decision in a fraction of the time. It must produce
//! exactly the bytes of the generic canonical serializer: the tests compare the two on every golden
//! decision and on generated ones, so a field added to a proof type but not here fails them. Any
//! map key it cannot place with certainty (not plain ASCII, or out of order) makes it give up, and
//! the caller falls back to the generic path.

use serde_json::Value;

use crate::decision::{
    CORE_MEMBERS, CanonicalCore, Check, ComposedGuarantees, ControlSignal, DecisionCore,
    MatchProof, OptimizeProof, Proof, RuleVerdict, RulesProof, ScoreTerms, SecurityProof,
    TraitsProof,
};
use crate::request::Principal;

/// Gave up: the value holds something only the generic serializer handles.
#[derive(Debug)]
pub(crate) struct Unsupported;

type R = Result<(), Unsupported>;

/// Whether any of the eight bytes of `word` is a quote, a backslash or a control character (below
/// 0x20): the bytes a JSON string escapes. The word-at-a-time test `(x - n * 0x01..01) & !x &
/// 0x80..80` (for n <= 0x80) is non-zero exactly when some byte of `x` is below n: the lowest such
/// byte takes no borrow from below and wraps to a value with its high bit set, while a byte of at
/// least n sets that bit only if it is 0x80 + n or more, which `!x` masks. With n = 1 on `x ^
/// c * 0x01..01` it finds a byte equal to `c`.
fn needs_escape(word: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let below_space = word.wrapping_sub(ONES * 0x20) & !word & HIGH;
    let quote = word ^ (ONES * u64::from(b'"'));
    let backslash = word ^ (ONES * u64::from(b'\\'));
    let has_zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    (below_space | has_zero(quote) | has_zero(backslash)) != 0
}

struct Out {
    buf: Vec<u8>,
    /// Cleared when a number is written in a form that reads back as a different value: an
    /// integer beyond ±2^53 (RFC 8785 writes the double it denotes) or a negative zero.
    exact: bool,
}

impl Out {
    fn raw(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
    }

    /// `"key":` for a static field name (always ASCII, no escapes).
    fn key(&mut self, first: bool, k: &str) {
        if !first {
            self.buf.push(b',');
        }
        self.buf.push(b'"');
        self.buf.extend_from_slice(k.as_bytes());
        self.buf.extend_from_slice(b"\":");
    }

    fn str(&mut self, s: &str) {
        self.buf.push(b'"');
        let bytes = s.as_bytes();
        let mut start = 0;
        let mut i = 0;
        while i < bytes.len() {
            // Eight bytes at a time while none of them needs an escape (most strings: ids,
            // service names, reasons), then byte by byte through a word that has one.
            if let Some(word) = bytes[i..].first_chunk::<8>()
                && !needs_escape(u64::from_le_bytes(*word))
            {
                i += 8;
                continue;
            }
            let b = bytes[i];
            let esc: Option<&[u8]> = match b {
                b'"' => Some(b"\\\""),
                b'\\' => Some(b"\\\\"),
                0x08 => Some(b"\\b"),
                0x09 => Some(b"\\t"),
                0x0a => Some(b"\\n"),
                0x0c => Some(b"\\f"),
                0x0d => Some(b"\\r"),
                0x00..=0x1f => None,
                _ => {
                    i += 1;
                    continue;
                }
            };
            self.buf.extend_from_slice(&bytes[start..i]);
            match esc {
                Some(e) => self.buf.extend_from_slice(e),
                None => self
                    .buf
                    .extend_from_slice(&crate::canonical::control_escape(b)),
            }
            i += 1;
            start = i;
        }
        self.buf.extend_from_slice(&bytes[start..]);
        self.buf.push(b'"');
    }

    fn num(&mut self, v: f64) -> R {
        // serde_json writes non-finite floats as null; so does the generic path.
        if !v.is_finite() {
            self.raw(b"null");
            return Ok(());
        }
        if v == 0.0 && v.is_sign_negative() {
            self.exact = false;
        }
        crate::canonical::with_number(v, |b| self.buf.extend_from_slice(b));
        Ok(())
    }

    fn bool(&mut self, v: bool) {
        self.raw(if v { b"true" } else { b"false" });
    }

    fn strs<S: AsRef<str>>(&mut self, items: &[S]) {
        self.buf.push(b'[');
        for (i, s) in items.iter().enumerate() {
            if i > 0 {
                self.buf.push(b',');
            }
            self.str(s.as_ref());
        }
        self.buf.push(b']');
    }

    /// A map with string keys, which must be ASCII and strictly ascending.
    fn map<'a, K: AsRef<str> + 'a + ?Sized, V: 'a>(
        &mut self,
        entries: impl Iterator<Item = (&'a K, V)>,
        mut value: impl FnMut(&mut Self, V) -> R,
    ) -> R {
        self.buf.push(b'{');
        let mut prev: Option<&str> = None;
        for (i, (k, v)) in entries.enumerate() {
            let k = k.as_ref();
            if !k.is_ascii() || prev.is_some_and(|p| p >= k) {
                return Err(Unsupported);
            }
            prev = Some(k);
            if i > 0 {
                self.buf.push(b',');
            }
            self.str(k);
            self.buf.push(b':');
            value(self, v)?;
        }
        self.buf.push(b'}');
        Ok(())
    }

    fn value(&mut self, v: &Value) -> R {
        match v {
            Value::Null => self.raw(b"null"),
            Value::Bool(b) => self.bool(*b),
            Value::Number(n) => {
                if n.as_i64().is_none() && n.as_u64().is_none() && n.as_f64().is_none() {
                    return Err(Unsupported);
                }
                // Integers are written as the double they denote, as RFC 8785 requires.
                const EXACT: u64 = 1 << 53;
                if n.as_u64().is_some_and(|u| u > EXACT)
                    || n.as_i64().is_some_and(|i| i.unsigned_abs() > EXACT)
                {
                    self.exact = false;
                }
                let f = n
                    .as_f64()
                    .or_else(|| n.as_i64().map(|i| i as f64))
                    .unwrap_or(0.0);
                self.num(f)?;
            }
            Value::String(s) => self.str(s),
            Value::Array(a) => {
                self.buf.push(b'[');
                for (i, item) in a.iter().enumerate() {
                    if i > 0 {
                        self.buf.push(b',');
                    }
                    self.value(item)?;
                }
                self.buf.push(b']');
            }
            Value::Object(m) => self.map(m.iter(), |o, v| o.value(v))?,
        }
        Ok(())
    }
}

/// The canonical JSON of a decision core, or `Unsupported`.
pub(crate) fn write_core(core: &DecisionCore<'_>) -> Result<CanonicalCore, Unsupported> {
    let mut o = Out {
        buf: Vec::with_capacity(4096),
        exact: true,
    };
    let mut spans: [(usize, usize); CORE_MEMBERS.len()] = [(0, 0); CORE_MEMBERS.len()];
    o.raw(b"{");
    for (i, (name, span)) in CORE_MEMBERS.iter().zip(spans.iter_mut()).enumerate() {
        o.key(i == 0, name);
        let start = o.buf.len();
        match *name {
            "control_signal" => control_signal(&mut o, core.control_signal)?,
            "guarantees" => guarantees(&mut o, core.guarantees)?,
            "policy_version" => o.str(core.policy_version),
            "principal" => principal(&mut o, core.principal)?,
            "proof" => proof(&mut o, core.proof)?,
            "registry_version" => o.str(core.registry_version),
            "request_digest" => o.str(core.request_digest),
            "score" => o.num(core.score)?,
            "service_id" => o.str(core.service_id),
            _ => return Err(Unsupported),
        }
        *span = (start, o.buf.len());
    }
    o.raw(b"}");
    Ok(CanonicalCore {
        bytes: o.buf,
        spans,
        exact: o.exact,
    })
}

fn control_signal(o: &mut Out, c: &ControlSignal) -> R {
    o.raw(b"{");
    o.key(true, "margin");
    o.num(c.margin)?;
    o.key(false, "u");
    o.raw(b"[");
    for (i, u) in c.u.iter().enumerate() {
        if i > 0 {
            o.raw(b",");
        }
        o.num(*u)?;
    }
    o.raw(b"]");
    o.key(false, "u_max");
    o.num(c.u_max)?;
    o.raw(b"}");
    Ok(())
}

fn guarantees(o: &mut Out, g: &ComposedGuarantees) -> R {
    o.raw(b"{");
    let mut first = true;
    if let Some(a) = g.accuracy {
        o.key(first, "accuracy");
        o.num(a)?;
        first = false;
    }
    o.key(first, "cost");
    o.num(g.cost)?;
    o.key(false, "data_locality");
    o.str(g.data_locality.as_str());
    o.key(false, "determinism");
    o.bool(g.determinism);
    o.key(false, "encryption");
    o.bool(g.encryption);
    if let Some(l) = g.latency_ms {
        o.key(false, "latency_ms");
        o.num(l)?;
    }
    o.key(false, "services");
    o.strs(&g.services);
    o.raw(b"}");
    Ok(())
}

fn principal(o: &mut Out, p: &Principal) -> R {
    o.raw(b"{");
    o.key(true, "id");
    o.str(&p.id);
    o.key(false, "permissions");
    o.strs(&p.permissions);
    if !p.roles.is_empty() {
        o.key(false, "roles");
        o.strs(&p.roles);
    }
    o.key(false, "tenant");
    o.str(&p.tenant);
    o.key(false, "trust_level");
    o.num(f64::from(p.trust_level))?;
    o.raw(b"}");
    Ok(())
}

fn proof(o: &mut Out, p: &Proof) -> R {
    o.raw(b"{");
    o.key(true, "matching");
    matching(o, &p.matching)?;
    o.key(false, "optimize");
    optimize(o, &p.optimize)?;
    o.key(false, "rules");
    rules(o, &p.rules)?;
    o.key(false, "security");
    security(o, &p.security)?;
    o.key(false, "traits");
    traits(o, &p.traits)?;
    o.raw(b"}");
    Ok(())
}

fn matching(o: &mut Out, m: &MatchProof) -> R {
    o.raw(b"{");
    o.key(true, "checks");
    o.raw(b"[");
    for (i, c) in m.checks.iter().enumerate() {
        if i > 0 {
            o.raw(b",");
        }
        check(o, c)?;
    }
    o.raw(b"]");
    o.key(false, "index_candidates");
    o.num(m.index_candidates as f64)?;
    o.key(false, "input_tokens");
    o.num(m.input_tokens as f64)?;
    o.key(false, "input_tokens_source");
    o.str(&m.input_tokens_source);
    o.key(false, "registry_services");
    o.num(m.registry_services as f64)?;
    o.raw(b"}");
    Ok(())
}

fn check(o: &mut Out, c: &Check) -> R {
    o.raw(b"{");
    o.key(true, "name");
    o.str(&c.name);
    o.key(false, "offered");
    o.value(&c.offered)?;
    o.key(false, "ok");
    o.bool(c.ok);
    o.key(false, "required");
    o.value(&c.required)?;
    o.raw(b"}");
    Ok(())
}

fn terms(o: &mut Out, t: &ScoreTerms) -> R {
    let fields: [(&str, f64); 12] = [
        ("attention", t.attention),
        ("cost", t.cost),
        ("estimated_cost", t.estimated_cost),
        ("intent", t.intent),
        ("kappa", t.kappa),
        ("latency", t.latency),
        ("latency_ms", t.latency_ms),
        ("quality", t.quality),
        ("reliability", t.reliability),
        ("resonance", t.resonance),
        ("risk", t.risk),
        ("rl", t.rl),
    ];
    o.raw(b"{");
    for (i, (k, v)) in fields.iter().enumerate() {
        o.key(i == 0, k);
        o.num(*v)?;
    }
    o.raw(b"}");
    Ok(())
}

fn optimize(o: &mut Out, p: &OptimizeProof) -> R {
    o.raw(b"{");
    o.key(true, "coefficients");
    o.map(p.coefficients.iter(), |o, v| o.num(*v))?;
    o.key(false, "feasible");
    o.num(p.feasible as f64)?;
    o.key(false, "fields_used");
    o.bool(p.fields_used);
    if !p.history.is_empty() {
        o.key(false, "history");
        o.map(p.history.iter(), |o, h| {
            o.raw(b"{");
            if h.circuit_open {
                o.key(true, "circuit_open");
                o.bool(true);
            }
            o.key(!h.circuit_open, "ewma_latency_ms");
            o.num(h.ewma_latency_ms)?;
            o.key(false, "samples");
            o.num(h.samples as f64)?;
            o.key(false, "success_rate");
            o.num(h.success_rate)?;
            o.raw(b"}");
            Ok(())
        })?;
    }
    if let Some(r) = &p.runner_up {
        o.key(false, "runner_up");
        o.raw(b"{");
        o.key(true, "score");
        o.num(r.score)?;
        o.key(false, "service_id");
        o.str(&r.service_id);
        o.raw(b"}");
    }
    o.key(false, "terms");
    terms(o, &p.terms)?;
    o.key(false, "tie_broken");
    o.bool(p.tie_broken);
    o.raw(b"}");
    Ok(())
}

fn rules(o: &mut Out, r: &RulesProof) -> R {
    o.raw(b"{");
    o.key(true, "operands");
    o.map(r.operands.iter(), |o, v| o.value(v))?;
    o.key(false, "outcomes");
    o.raw(b"[");
    for (i, v) in r.outcomes.iter().enumerate() {
        if i > 0 {
            o.raw(b",");
        }
        verdict(o, v);
    }
    o.raw(b"]");
    o.raw(b"}");
    Ok(())
}

fn verdict(o: &mut Out, v: &RuleVerdict) {
    o.raw(b"{");
    o.key(true, "applied");
    o.bool(v.applied);
    if let Some(e) = &v.error {
        o.key(false, "error");
        o.str(e);
    }
    o.key(false, "policy_id");
    o.str(&v.policy_id);
    if let Some(r) = v.result {
        o.key(false, "result");
        o.bool(r);
    }
    o.raw(b"}");
}

fn security(o: &mut Out, s: &SecurityProof) -> R {
    o.raw(b"{");
    o.key(true, "access");
    o.bool(s.access);
    o.key(false, "authenticated");
    o.bool(s.authenticated);
    o.key(false, "authorized");
    o.bool(s.authorized);
    o.key(false, "declared_sensitive");
    o.bool(s.declared_sensitive);
    o.key(false, "granted_permissions");
    o.strs(&s.granted_permissions);
    o.key(false, "pii");
    o.raw(b"[");
    for (i, f) in s.pii.iter().enumerate() {
        if i > 0 {
            o.raw(b",");
        }
        o.raw(b"{");
        o.key(true, "kind");
        o.str(&f.kind);
        o.key(false, "path");
        o.str(&f.path);
        o.raw(b"}");
    }
    o.raw(b"]");
    o.key(false, "privacy");
    o.bool(s.privacy);
    o.key(false, "sensitive");
    o.bool(s.sensitive);
    o.key(false, "trust");
    o.bool(s.trust);
    o.raw(b"}");
    Ok(())
}

fn traits(o: &mut Out, t: &TraitsProof) -> R {
    o.raw(b"{");
    o.key(true, "constraints");
    o.map(t.constraints.iter(), |o, v| o.num(*v))?;
    o.key(false, "demands");
    o.map(t.demands.iter(), |o, v| o.num(*v))?;
    o.raw(b"}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn escapes(b: u8) -> bool {
        b < 0x20 || b == b'"' || b == b'\\'
    }

    #[test]
    fn the_word_test_agrees_with_the_byte_test_for_every_byte_in_every_position() {
        // Fillers around the probe: the neighbours of the thresholds and the high-bit bytes that
        // could confuse the borrow arithmetic.
        let fillers = [
            b'a', b' ', b'!', b'#', b'[', b']', 0x1f, 0x7f, 0x80, 0xa0, 0xdc, 0xff,
        ];
        for filler in fillers {
            for pos in 0..8 {
                for probe in 0..=255u8 {
                    let mut word = [filler; 8];
                    word[pos] = probe;
                    assert_eq!(
                        needs_escape(u64::from_le_bytes(word)),
                        word.iter().any(|&b| escapes(b)),
                        "{word:?}"
                    );
                }
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn the_word_test_agrees_with_the_byte_test_on_any_word(word in proptest::prelude::any::<u64>()) {
            proptest::prop_assert_eq!(
                needs_escape(word),
                word.to_le_bytes().iter().any(|&b| escapes(b))
            );
        }

        #[test]
        fn strings_are_written_as_serde_json_writes_them(s in "(?s).{0,40}", pad in 0usize..9) {
            // `pad` moves the escapes across the eight-byte words.
            let s = format!("{}{s}", "x".repeat(pad));
            let mut out = Out { buf: Vec::new(), exact: true };
            out.str(&s);
            proptest::prop_assert_eq!(
                String::from_utf8(out.buf).map_err(|e| proptest::test_runner::TestCaseError::fail(e.to_string()))?,
                serde_json::to_string(&s).map_err(|e| proptest::test_runner::TestCaseError::fail(e.to_string()))?
            );
        }
    }

    #[test]
    fn strings_with_every_escape_at_every_offset_are_written_as_serde_json_writes_them() {
        for b in (0u8..0x20).chain([b'"', b'\\', b'/', 0x7f]) {
            for pad in 0..17 {
                let s = format!("{}{}tail-\u{e9}\u{2028}", "a".repeat(pad), char::from(b));
                let mut out = Out {
                    buf: Vec::new(),
                    exact: true,
                };
                out.str(&s);
                assert_eq!(out.buf, serde_json::to_vec(&s).unwrap_or_default(), "{s:?}");
            }
        }
    }
}
