//! Field terms of the master calculus: complex field vectors, unitary-FFT band projectors, mode
//! energies, deterministic capability encodings and the terms I, A, RL, W.
//!
//! Every vector is rescaled by its largest component magnitude before any product is taken, so no
//! finite input can overflow to infinity and every term stays a finite number in [0, 1].

use std::collections::HashMap;
use std::sync::Arc;

use num_complex::Complex64;
use rustfft::{Fft, FftPlanner};

/// Number of frequency bands the field modes are split into.
pub const BANDS: usize = 4;

/// Converts `[re, im]` pairs to complex numbers, rescaled so the largest magnitude is 1 (a zero
/// vector stays zero). Correlations and mode distributions are scale-invariant, so this changes no
/// term; it only keeps products finite.
pub fn to_complex(v: &[[f64; 2]]) -> Vec<Complex64> {
    let max = v
        .iter()
        .map(|[re, im]| re.abs().max(im.abs()))
        .fold(0.0_f64, f64::max);
    if max == 0.0 || !max.is_finite() {
        return vec![Complex64::new(0.0, 0.0); v.len()];
    }
    v.iter()
        .map(|[re, im]| Complex64::new(re / max, im / max))
        .collect()
}

/// ‖x‖².
pub fn norm_sq(x: &[Complex64]) -> f64 {
    x.iter().map(Complex64::norm_sqr).sum()
}

/// Normalized correlation |⟨x, y⟩| / (‖x‖‖y‖), in [0, 1]; 0 when either vector is zero or the
/// lengths differ.
pub fn corr(x: &[Complex64], y: &[Complex64]) -> f64 {
    if x.len() != y.len() {
        return 0.0;
    }
    let nx = norm_sq(x);
    let ny = norm_sq(y);
    if nx == 0.0 || ny == 0.0 {
        return 0.0;
    }
    let dot: Complex64 = x.iter().zip(y).map(|(a, b)| a.conj() * b).sum();
    clamp01(dot.norm() / (nx.sqrt() * ny.sqrt()))
}

fn clamp01(v: f64) -> f64 {
    if v.is_nan() { 0.0 } else { v.clamp(0.0, 1.0) }
}

/// The band of DFT bin `k` of an `n`-point transform: bins are ordered by absolute frequency
/// `min(k, n - k)` and split into [`BANDS`] equal ranges of `0..=n/2`.
pub fn band_of(k: usize, n: usize) -> usize {
    let f = k.min(n - k);
    let half = n / 2 + 1;
    (f * BANDS / half).min(BANDS - 1)
}

/// A unitary DFT of a fixed length (`X = F x / √n`, so ‖X‖ = ‖x‖).
#[derive(Clone)]
pub struct UnitaryFft {
    forward: Arc<dyn Fft<f64>>,
    inverse: Arc<dyn Fft<f64>>,
    n: usize,
}

impl std::fmt::Debug for UnitaryFft {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "UnitaryFft({})", self.n)
    }
}

impl UnitaryFft {
    /// Plans transforms of length `n`.
    pub fn new(n: usize) -> UnitaryFft {
        let mut planner = FftPlanner::new();
        UnitaryFft {
            forward: planner.plan_fft_forward(n),
            inverse: planner.plan_fft_inverse(n),
            n,
        }
    }

    /// The unitary transform of `x`.
    pub fn forward(&self, x: &[Complex64]) -> Vec<Complex64> {
        let mut buf = x.to_vec();
        if self.n > 0 {
            self.forward.process(&mut buf);
            let s = 1.0 / (self.n as f64).sqrt();
            buf.iter_mut().for_each(|v| *v *= s);
        }
        buf
    }

    /// The inverse unitary transform.
    pub fn inverse(&self, x: &[Complex64]) -> Vec<Complex64> {
        let mut buf = x.to_vec();
        if self.n > 0 {
            self.inverse.process(&mut buf);
            let s = 1.0 / (self.n as f64).sqrt();
            buf.iter_mut().for_each(|v| *v *= s);
        }
        buf
    }

    /// The band projector `P_b x = F⁻¹ 1_b F x`. The projectors are orthogonal and sum to the
    /// identity.
    pub fn project(&self, x: &[Complex64], band: usize) -> Vec<Complex64> {
        let mut spectrum = self.forward(x);
        for (k, v) in spectrum.iter_mut().enumerate() {
            if band_of(k, self.n) != band {
                *v = Complex64::new(0.0, 0.0);
            }
        }
        self.inverse(&spectrum)
    }

    /// Mode energies: the share of ‖x‖² in each band (all zero for a zero vector).
    pub fn modes(&self, x: &[Complex64]) -> [f64; BANDS] {
        let spectrum = self.forward(x);
        let mut e = [0.0; BANDS];
        for (k, v) in spectrum.iter().enumerate() {
            e[band_of(k, self.n)] += v.norm_sqr();
        }
        let total: f64 = e.iter().sum();
        if total > 0.0 && total.is_finite() {
            e.iter_mut().for_each(|v| *v = clamp01(*v / total));
        } else {
            e = [0.0; BANDS];
        }
        e
    }
}

/// Bhattacharyya coefficient Σ √(a_b b_b) of two mode distributions, in [0, 1].
pub fn overlap(a: &[f64; BANDS], b: &[f64; BANDS]) -> f64 {
    clamp01(a.iter().zip(b).map(|(x, y)| (x * y).sqrt()).sum())
}

/// The deterministic unit-norm encoding of a label in ℂⁿ: phases drawn from SplitMix64 seeded
/// with the first 8 bytes of SHA-256(label). Equal labels give equal encodings on every platform.
pub fn encoding(label: &str, n: usize) -> Vec<Complex64> {
    let digest = caio_contracts::canonical::sha256(label.as_bytes());
    let mut seed = u64::from_le_bytes([
        digest[0], digest[1], digest[2], digest[3], digest[4], digest[5], digest[6], digest[7],
    ]);
    let scale = if n == 0 { 0.0 } else { 1.0 / (n as f64).sqrt() };
    (0..n)
        .map(|_| {
            seed = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = seed;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            let phase = (z >> 11) as f64 / (1u64 << 53) as f64 * std::f64::consts::TAU;
            Complex64::from_polar(scale, phase)
        })
        .collect()
}

/// The field terms of one service.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct FieldTerms {
    /// Intent energy I: overlap of the intent's and the service encoding's mode distributions.
    pub intent: f64,
    /// Attention A: correlation of the service encoding with the context encoding.
    pub attention: f64,
    /// RL: best correlation of the intent with one of the service's capability encodings.
    pub rl: f64,
    /// The service encoding's mode distribution.
    pub service_modes: [f64; BANDS],
}

/// Everything derived from a request's field vectors, computed once per request.
#[derive(Debug, Clone)]
pub struct FieldContext {
    fft: UnitaryFft,
    n: usize,
    intent: Vec<Complex64>,
    context: Vec<Complex64>,
    /// The intent's mode distribution.
    pub intent_modes: [f64; BANDS],
    /// The trait field's mode distribution (trait demands).
    pub trait_modes: [f64; BANDS],
    /// Resonance W = corr(intent, rfs).
    pub resonance: f64,
    capability_corr: HashMap<String, (f64, Vec<Complex64>)>,
}

impl FieldContext {
    /// Prepares the request-level quantities. `None` when the request carries no field vectors.
    /// `context_pairs` are the request context's `key=value` strings, used to derive a context
    /// encoding when the request does not send one.
    pub fn prepare(
        fields: Option<&caio_contracts::Fields>,
        context_pairs: &[String],
    ) -> Option<FieldContext> {
        let f = fields?;
        let n = [
            f.intent.len(),
            f.trait_field.len(),
            f.rfs.len(),
            f.context.len(),
        ]
        .into_iter()
        .max()
        .unwrap_or(0);
        if n == 0 {
            return None;
        }
        let pad = |v: &[[f64; 2]]| {
            let mut c = to_complex(v);
            c.resize(n, Complex64::new(0.0, 0.0));
            c
        };
        let fft = UnitaryFft::new(n);
        let intent = pad(&f.intent);
        let rfs = pad(&f.rfs);
        let trait_field = pad(&f.trait_field);
        let context = if f.context.is_empty() {
            let mut acc = vec![Complex64::new(0.0, 0.0); n];
            for pair in context_pairs {
                for (a, e) in acc.iter_mut().zip(encoding(pair, n)) {
                    *a += e;
                }
            }
            acc
        } else {
            pad(&f.context)
        };
        Some(FieldContext {
            intent_modes: fft.modes(&intent),
            trait_modes: fft.modes(&trait_field),
            resonance: corr(&intent, &rfs),
            fft,
            n,
            intent,
            context,
            capability_corr: HashMap::new(),
        })
    }

    /// The field terms of a service with these capabilities.
    pub fn terms(&mut self, capabilities: &[String]) -> FieldTerms {
        let mut rl = 0.0_f64;
        let mut service = vec![Complex64::new(0.0, 0.0); self.n];
        for cap in capabilities {
            let (c, enc) = match self.capability_corr.get(cap) {
                Some(v) => v,
                None => {
                    let enc = encoding(cap, self.n);
                    let c = corr(&self.intent, &enc);
                    self.capability_corr.entry(cap.clone()).or_insert((c, enc))
                }
            };
            rl = rl.max(*c);
            for (s, e) in service.iter_mut().zip(enc) {
                *s += e;
            }
        }
        let service_modes = self.fft.modes(&service);
        FieldTerms {
            intent: overlap(&self.intent_modes, &service_modes),
            attention: corr(&service, &self.context),
            rl: clamp01(rl),
            service_modes,
        }
    }
}

/// The bounded control signal: `u_b = u_max · tanh(κ · (m_b(ψ) − m_b(e_s)))`, so ‖u‖∞ < u_max.
pub fn control_signal(
    kappa: f64,
    intent_modes: &[f64; BANDS],
    service_modes: &[f64; BANDS],
    u_max: f64,
) -> Vec<f64> {
    let k = if kappa.is_finite() { kappa } else { 0.0 };
    intent_modes
        .iter()
        .zip(service_modes)
        .map(|(a, b)| {
            let u = u_max * (k * (a - b)).tanh();
            if u.is_finite() {
                u.clamp(-u_max, u_max)
            } else {
                0.0
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn vecs(n: usize) -> impl Strategy<Value = Vec<[f64; 2]>> {
        prop::collection::vec(prop::array::uniform2(-1e6f64..1e6), n..=n)
    }

    proptest! {
        #[test]
        fn projectors_are_a_resolution_of_identity(x in vecs(16)) {
            let fft = UnitaryFft::new(16);
            let c = to_complex(&x);
            let mut sum = vec![Complex64::new(0.0, 0.0); 16];
            let mut energy = 0.0;
            for b in 0..BANDS {
                let p = fft.project(&c, b);
                energy += norm_sq(&p);
                for (s, v) in sum.iter_mut().zip(&p) { *s += v; }
            }
            for (s, v) in sum.iter().zip(&c) { prop_assert!((s - v).norm() < 1e-9); }
            prop_assert!((energy - norm_sq(&c)).abs() < 1e-9 * (1.0 + norm_sq(&c)));
        }

        #[test]
        fn correlation_is_a_unit_interval_and_symmetric(x in vecs(8), y in vecs(8)) {
            let (a, b) = (to_complex(&x), to_complex(&y));
            let c = corr(&a, &b);
            prop_assert!((0.0..=1.0).contains(&c));
            prop_assert!((c - corr(&b, &a)).abs() < 1e-12);
        }

        #[test]
        fn extreme_inputs_stay_finite(x in prop::collection::vec(prop::array::uniform2(prop::num::f64::NORMAL | prop::num::f64::SUBNORMAL | prop::num::f64::ZERO), 1..32)) {
            let fields = caio_contracts::Fields { intent: x.clone(), rfs: x.clone(), ..Default::default() };
            let mut ctx = FieldContext::prepare(Some(&fields), &[]).ok_or_else(|| TestCaseError::fail("no ctx"))?;
            let t = ctx.terms(&["a".to_owned(), "b".to_owned()]);
            for v in [t.intent, t.attention, t.rl, ctx.resonance] {
                prop_assert!(v.is_finite() && (0.0..=1.0).contains(&v));
            }
            let u = control_signal(0.9, &ctx.intent_modes, &t.service_modes, 1.0);
            prop_assert!(u.iter().all(|v| v.is_finite() && v.abs() <= 1.0));
        }
    }

    #[test]
    fn encodings_are_unit_norm_and_distinct() {
        let a = encoding("sentiment_analysis", 64);
        let b = encoding("translation", 64);
        assert!((norm_sq(&a) - 1.0).abs() < 1e-12);
        assert!(corr(&a, &a) > 0.999_999);
        assert!(corr(&a, &b) < 0.5);
        assert_eq!(a, encoding("sentiment_analysis", 64));
    }
}
