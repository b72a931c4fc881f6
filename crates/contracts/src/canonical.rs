//! Canonical JSON (RFC 8785, JCS) and the `sha256:<hex>` content addresses built on it.
//!
//! Every content address in CAIO — registry versions, policy versions, request digests, decision
//! ids — is the SHA-256 of a value's canonical JSON, so two parties that hold the same value compute
//! the same address whatever their map order, whitespace or number spelling.
//!
//! Two serializers produce the same bytes. The reference one (serde_json_canonicalizer) buffers and
//! sorts every object's members. The fast one streams straight into the hash: it relies on object
//! members arriving already sorted — CAIO's wire types declare their fields in canonical order and
//! JSON maps are `BTreeMap`s — and verifies that as it goes. When a key arrives out of order, or a
//! key is not plain ASCII (where UTF-8 byte order and the UTF-16 order RFC 8785 demands could
//! differ), it gives up and the reference serializer runs instead. Routing hashes on every request,
//! which is why the fast path exists; the tests hold the two to identical output.

use std::io::{self, Write};

use ring::digest::{Context, SHA256};
use serde::Serialize;
use serde_json::ser::{CharEscape, Formatter};

/// A value that has no canonical JSON form (a non-string map key, an I/O failure of the sink).
#[derive(Debug, thiserror::Error)]
#[error("value has no canonical JSON form: {0}")]
pub struct CanonicalError(#[from] serde_json::Error);

/// The canonical JSON bytes of `value`.
pub fn to_vec<T: Serialize>(value: &T) -> Result<Vec<u8>, CanonicalError> {
    let mut out = Vec::with_capacity(256);
    match write_fast(value, &mut out) {
        Ok(()) => Ok(out),
        Err(Fast::Fallback) => Ok(serde_json_canonicalizer::to_vec(value)?),
        Err(Fast::Error(e)) => Err(CanonicalError(e)),
    }
}

/// The canonical JSON text of `value`.
pub fn to_string<T: Serialize>(value: &T) -> Result<String, CanonicalError> {
    let bytes = to_vec(value)?;
    // Canonical JSON is built from `str`s and ASCII: always UTF-8.
    String::from_utf8(bytes).map_err(|e| {
        CanonicalError(serde_json::Error::io(io::Error::new(
            io::ErrorKind::InvalidData,
            e,
        )))
    })
}

/// `sha256:<hex>` of the canonical JSON of `value`, streamed into the hash.
pub fn digest<T: Serialize>(value: &T) -> Result<String, CanonicalError> {
    // Serializing into memory and hashing the bytes in one call measured faster than feeding the
    // hash fragment by fragment.
    let mut bytes = Vec::with_capacity(4096);
    match write_fast(value, &mut bytes) {
        Ok(()) => Ok(format_digest(&sha256(&bytes))),
        Err(Fast::Fallback) => {
            let mut writer = HashWriter(Sha256::new());
            serde_json_canonicalizer::to_writer(value, &mut writer)?;
            Ok(format_digest(&writer.0.finish()))
        }
        Err(Fast::Error(e)) => Err(CanonicalError(e)),
    }
}

/// Whether `value` takes the streaming path (its object members arrive sorted and its keys are
/// ASCII). For tests and benches.
pub fn streams<T: Serialize>(value: &T) -> bool {
    write_fast(value, &mut io::sink()).is_ok()
}

/// The reference serializer's digest, for tests that hold the two paths to the same output.
pub fn reference_digest<T: Serialize>(value: &T) -> Result<String, CanonicalError> {
    let mut writer = HashWriter(Sha256::new());
    serde_json_canonicalizer::to_writer(value, &mut writer)?;
    Ok(format_digest(&writer.0.finish()))
}

/// `sha256:<hex>` of raw bytes.
pub fn digest_bytes(bytes: &[u8]) -> String {
    format_digest(&sha256(bytes))
}

/// SHA-256 of `bytes`. Every hash in CAIO goes through [`Sha256`] (ring's BoringSSL assembly,
/// with AVX and SHA-extension paths: twice as fast as portable code on CPUs without the
/// extensions, docs/benchmarks.md).
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(bytes);
    h.finish()
}

/// A SHA-256 state fed in pieces.
pub struct Sha256(Context);

impl Sha256 {
    /// An empty state.
    pub fn new() -> Sha256 {
        Sha256(Context::new(&SHA256))
    }

    /// Appends `bytes`.
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// The digest of everything appended.
    pub fn finish(self) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (o, b) in out.iter_mut().zip(self.0.finish().as_ref()) {
            *o = *b;
        }
        out
    }
}

impl Default for Sha256 {
    fn default() -> Self {
        Sha256::new()
    }
}

impl std::fmt::Debug for Sha256 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sha256")
    }
}

fn format_digest(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256:");
    for b in bytes {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    out
}

/// Feeds serialized bytes straight into a SHA-256 state.
struct HashWriter(Sha256);

impl Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

enum Fast {
    Fallback,
    Error(serde_json::Error),
}

/// The marker error the formatter raises to abandon the fast path.
const FALLBACK: &str = "caio-canonical-fallback";

fn write_fast<T: Serialize, W: Write>(value: &T, out: &mut W) -> Result<(), Fast> {
    let mut ser = serde_json::Serializer::with_formatter(out, JcsFormatter::default());
    value.serialize(&mut ser).map_err(|e| {
        if e.is_io() && e.to_string().contains(FALLBACK) {
            Fast::Fallback
        } else {
            Fast::Error(e)
        }
    })
}

fn fallback() -> io::Error {
    io::Error::other(FALLBACK)
}

/// Longest object key the streaming path handles; a longer one falls back to the reference.
const MAX_KEY: usize = 96;

/// Per open object: its previous member's key and the key being written, in two inline buffers
/// whose roles swap after each member (no allocation, no copying of the previous key).
struct Level {
    bufs: [[u8; MAX_KEY]; 2],
    lens: [usize; 2],
    /// Which buffer holds the previous key.
    last: usize,
    has_last: bool,
}

/// Compact JSON with ECMAScript number formatting that checks member order as it goes.
#[derive(Default)]
struct JcsFormatter {
    levels: Vec<Level>,
    /// Whether a key is being written (into the innermost level's pending buffer).
    in_key: bool,
}

impl JcsFormatter {
    fn number<W: ?Sized + Write>(w: &mut W, v: f64) -> io::Result<()> {
        if !v.is_finite() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "NaN and infinities have no JSON form",
            ));
        }
        with_number(v, |b| w.write_all(b))
    }
}

/// Calls `f` with the RFC 8785 (ECMAScript) form of a finite number, formatted on the stack. The
/// one place numbers are spelled, for the streaming formatter and the direct core writer alike.
pub(crate) fn with_number<R>(v: f64, f: impl FnOnce(&[u8]) -> R) -> R {
    // Integers within ±2^53 print the same in ECMAScript and in decimal: take the cheap path.
    if v.fract() == 0.0 && v.abs() < 9_007_199_254_740_992.0 {
        if v == 0.0 {
            return f(b"0");
        }
        let mut buf = itoa::Buffer::new();
        return f(buf.format(v as i64).as_bytes());
    }
    let mut buf = ryu_js::Buffer::new();
    f(buf.format_finite(v).as_bytes())
}

/// The `\u00XX` escape of an ASCII control character (lowercase hex, as RFC 8785 requires).
pub(crate) fn control_escape(byte: u8) -> [u8; 6] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    [
        b'\\',
        b'u',
        b'0',
        b'0',
        HEX[usize::from(byte >> 4)],
        HEX[usize::from(byte & 0xf)],
    ]
}

impl Formatter for JcsFormatter {
    fn write_f64<W: ?Sized + Write>(&mut self, w: &mut W, v: f64) -> io::Result<()> {
        Self::number(w, v)
    }
    fn write_f32<W: ?Sized + Write>(&mut self, w: &mut W, v: f32) -> io::Result<()> {
        Self::number(w, f64::from(v))
    }
    // RFC 8785 numbers are IEEE doubles: integers are written as the double they denote.
    fn write_i8<W: ?Sized + Write>(&mut self, w: &mut W, v: i8) -> io::Result<()> {
        Self::number(w, f64::from(v))
    }
    fn write_i16<W: ?Sized + Write>(&mut self, w: &mut W, v: i16) -> io::Result<()> {
        Self::number(w, f64::from(v))
    }
    fn write_i32<W: ?Sized + Write>(&mut self, w: &mut W, v: i32) -> io::Result<()> {
        Self::number(w, f64::from(v))
    }
    fn write_i64<W: ?Sized + Write>(&mut self, w: &mut W, v: i64) -> io::Result<()> {
        Self::number(w, v as f64)
    }
    fn write_i128<W: ?Sized + Write>(&mut self, w: &mut W, v: i128) -> io::Result<()> {
        Self::number(w, v as f64)
    }
    fn write_u8<W: ?Sized + Write>(&mut self, w: &mut W, v: u8) -> io::Result<()> {
        Self::number(w, f64::from(v))
    }
    fn write_u16<W: ?Sized + Write>(&mut self, w: &mut W, v: u16) -> io::Result<()> {
        Self::number(w, f64::from(v))
    }
    fn write_u32<W: ?Sized + Write>(&mut self, w: &mut W, v: u32) -> io::Result<()> {
        Self::number(w, f64::from(v))
    }
    fn write_u64<W: ?Sized + Write>(&mut self, w: &mut W, v: u64) -> io::Result<()> {
        Self::number(w, v as f64)
    }
    fn write_u128<W: ?Sized + Write>(&mut self, w: &mut W, v: u128) -> io::Result<()> {
        Self::number(w, v as f64)
    }
    fn write_number_str<W: ?Sized + Write>(&mut self, _w: &mut W, _v: &str) -> io::Result<()> {
        // Arbitrary-precision numbers must be re-rendered as doubles: leave that to the reference.
        Err(fallback())
    }

    fn begin_object<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.levels.push(Level {
            bufs: [[0; MAX_KEY]; 2],
            lens: [0; 2],
            last: 0,
            has_last: false,
        });
        w.write_all(b"{")
    }
    fn end_object<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.levels.pop();
        w.write_all(b"}")
    }
    fn begin_object_key<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        let Some(level) = self.levels.last_mut() else {
            return Err(fallback());
        };
        level.lens[1 - level.last] = 0;
        self.in_key = true;
        if first { Ok(()) } else { w.write_all(b",") }
    }
    fn end_object_key<W: ?Sized + Write>(&mut self, _w: &mut W) -> io::Result<()> {
        self.in_key = false;
        let Some(level) = self.levels.last_mut() else {
            return Err(fallback());
        };
        let pending = 1 - level.last;
        let key = &level.bufs[pending][..level.lens[pending]];
        if !key.is_ascii()
            || (level.has_last && level.bufs[level.last][..level.lens[level.last]] >= *key)
        {
            return Err(fallback());
        }
        level.last = pending;
        level.has_last = true;
        Ok(())
    }
    fn write_string_fragment<W: ?Sized + Write>(
        &mut self,
        w: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        if self.in_key {
            let Some(level) = self.levels.last_mut() else {
                return Err(fallback());
            };
            let pending = 1 - level.last;
            let len = level.lens[pending];
            let bytes = fragment.as_bytes();
            if len + bytes.len() > MAX_KEY {
                return Err(fallback());
            }
            level.bufs[pending][len..len + bytes.len()].copy_from_slice(bytes);
            level.lens[pending] = len + bytes.len();
        }
        w.write_all(fragment.as_bytes())
    }
    fn write_char_escape<W: ?Sized + Write>(
        &mut self,
        w: &mut W,
        escape: CharEscape,
    ) -> io::Result<()> {
        // Escaped characters (quotes, backslashes, controls) in keys would need their unescaped
        // code units compared; leave such keys to the reference serializer.
        if self.in_key {
            return Err(fallback());
        }
        let s: &[u8] = match escape {
            CharEscape::Quote => b"\\\"",
            CharEscape::ReverseSolidus => b"\\\\",
            CharEscape::Solidus => b"/",
            CharEscape::Backspace => b"\\b",
            CharEscape::FormFeed => b"\\f",
            CharEscape::LineFeed => b"\\n",
            CharEscape::CarriageReturn => b"\\r",
            CharEscape::Tab => b"\\t",
            CharEscape::AsciiControl(byte) => return w.write_all(&control_escape(byte)),
        };
        w.write_all(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// FIPS 180-2's test vectors, whole and fed in pieces across a block boundary.
    #[test]
    fn sha256_matches_the_standard_vectors() {
        assert_eq!(
            hex::encode(sha256(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let two_blocks = b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
        let mut h = Sha256::new();
        for piece in two_blocks.chunks(7) {
            h.update(piece);
        }
        assert_eq!(
            hex::encode(h.finish()),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
        );
        assert_eq!(
            digest_bytes(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn keys_are_sorted_and_numbers_use_ecmascript_form() {
        let v = json!({"b": 1.0, "a": [1e21, 0.000001, 1e-7, -0.0, 5, 9007199254740993u64], "é": "x\u{1}\"/", "A": true});
        assert_eq!(
            to_string(&v).unwrap_or_default(),
            "{\"A\":true,\"a\":[1e+21,0.000001,1e-7,0,5,9007199254740992],\"b\":1,\"é\":\"x\\u0001\\\"/\"}"
        );
    }

    #[test]
    fn digest_ignores_key_order_and_whitespace() {
        let a: serde_json::Value =
            serde_json::from_str(r#"{"x": 1, "y": [2, 3]}"#).unwrap_or_default();
        let b: serde_json::Value =
            serde_json::from_str(r#"{ "y":[2,3],"x":1.0 }"#).unwrap_or_default();
        let da = digest(&a).unwrap_or_default();
        assert!(da.starts_with("sha256:") && da.len() == 71);
        assert_eq!(da, digest(&b).unwrap_or_default());
        assert_ne!(
            da,
            digest(&json!({"x": 2, "y": [2, 3]})).unwrap_or_default()
        );
    }

    #[derive(Serialize)]
    struct Unsorted {
        zeta: u8,
        alpha: u8,
    }

    #[test]
    fn out_of_order_and_non_ascii_keys_fall_back_to_the_reference() {
        assert!(!streams(&Unsorted { zeta: 1, alpha: 2 }));
        assert_eq!(
            to_string(&Unsorted { zeta: 1, alpha: 2 }).unwrap_or_default(),
            r#"{"alpha":2,"zeta":1}"#
        );
        // U+E000 sorts after U+10000 in UTF-8 but before it in UTF-16, as RFC 8785 requires.
        let v = json!({"\u{e000}": 1, "\u{10000}": 2, "a\"b": 3});
        assert!(!streams(&v));
        assert_eq!(digest(&v).ok(), reference_digest(&v).ok());
        assert_eq!(
            to_string(&v).unwrap_or_default(),
            "{\"a\\\"b\":3,\"\u{10000}\":2,\"\u{e000}\":1}"
        );
    }

    /// serde_json turns non-finite floats into `null` before any formatter sees them. CAIO never
    /// emits one (parsers refuse them in input, the calculus clamps every term), so this only
    /// pins the behaviour down.
    #[test]
    fn non_finite_numbers_serialize_as_null() {
        assert_eq!(
            to_string(&[1.0, f64::NAN, f64::INFINITY]).unwrap_or_default(),
            "[1,null,null]"
        );
    }

    proptest::proptest! {
        /// The streaming path and the reference serializer agree on arbitrary JSON.
        #[test]
        fn fast_and_reference_agree(v in arbitrary_json()) {
            proptest::prop_assert_eq!(digest(&v).ok(), reference_digest(&v).ok());
            proptest::prop_assert_eq!(to_vec(&v).ok(), serde_json_canonicalizer::to_vec(&v).ok());
        }
    }

    fn arbitrary_json() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::Bool),
            any::<i64>().prop_map(|i| json!(i)),
            (-1e30f64..1e30).prop_map(|f| json!(f)),
            "\\PC{0,12}".prop_map(serde_json::Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
                prop::collection::btree_map("[a-z\u{e9}\u{e000}\u{10000}\"]{0,4}", inner, 0..6)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }
}
