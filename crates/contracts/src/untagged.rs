//! Deserializers for the small "one of these shapes" values (a bound is a flag or a range, a
//! constraint value is a flag, a number, a string or a list).
//!
//! `#[serde(untagged)]` buffers the input and tries each variant in turn, building (and
//! formatting) an error for every miss: on the routing path that was most of the cost of reading
//! a request's constraints. These visitors look at the input's type once and take the one
//! variant it can be. They accept exactly what the untagged derive accepted; serializing is still
//! derived.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::model::{Bound, ConstraintValue, Range};
use crate::request::Scalar;

macro_rules! numbers {
    ($variant:path) => {
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
            Ok($variant(v))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            Ok($variant(v as f64))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            Ok($variant(v as f64))
        }
    };
}

struct ScalarVisitor;

impl<'de> Visitor<'de> for ScalarVisitor {
    type Value = Scalar;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a boolean, a number or a string")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar, E> {
        Ok(Scalar::Bool(v))
    }
    numbers!(Scalar::Number);
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
        Ok(Scalar::Text(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Scalar, E> {
        Ok(Scalar::Text(v))
    }
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Scalar, D::Error> {
        d.deserialize_any(ScalarVisitor)
    }
}

struct BoundVisitor;

impl<'de> Visitor<'de> for BoundVisitor {
    type Value = Bound;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("`true`/`false` or a range such as `{min: 0.9}` or `{max: 120}`")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Bound, E> {
        Ok(Bound::Flag(v))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Bound, A::Error> {
        Range::deserialize(de::value::MapAccessDeserializer::new(map)).map(Bound::Range)
    }
}

impl<'de> Deserialize<'de> for Bound {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Bound, D::Error> {
        d.deserialize_any(BoundVisitor)
    }
}

struct ConstraintVisitor;

impl<'de> Visitor<'de> for ConstraintVisitor {
    type Value = ConstraintValue;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a boolean, a number, a string or a list of strings")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<ConstraintValue, E> {
        Ok(ConstraintValue::Bool(v))
    }
    numbers!(ConstraintValue::Number);
    fn visit_str<E: de::Error>(self, v: &str) -> Result<ConstraintValue, E> {
        Ok(ConstraintValue::Text(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<ConstraintValue, E> {
        Ok(ConstraintValue::Text(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<ConstraintValue, A::Error> {
        Vec::<String>::deserialize(de::value::SeqAccessDeserializer::new(seq))
            .map(ConstraintValue::List)
    }
}

impl<'de> Deserialize<'de> for ConstraintValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<ConstraintValue, D::Error> {
        d.deserialize_any(ConstraintVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_shape_takes_its_variant() {
        let s: Vec<Scalar> = serde_json::from_str(r#"[true, 3, -2, 1.5, "de"]"#).unwrap();
        assert_eq!(
            s,
            vec![
                Scalar::Bool(true),
                Scalar::Number(3.0),
                Scalar::Number(-2.0),
                Scalar::Number(1.5),
                Scalar::Text("de".into())
            ]
        );
        let b: Vec<Bound> =
            serde_json::from_str(r#"[false, {"min": 0.9}, {"max": 120, "min": 1}]"#).unwrap();
        assert_eq!(b[0], Bound::Flag(false));
        assert_eq!(b[1].range().and_then(|r| r.min), Some(0.9));
        assert_eq!(
            b[2].range().map(|r| (r.min, r.max)),
            Some((Some(1.0), Some(120.0)))
        );
        let c: Vec<ConstraintValue> =
            serde_json::from_str(r#"[true, 4096, "eu", ["en", "de"]]"#).unwrap();
        assert_eq!(
            c,
            vec![
                ConstraintValue::Bool(true),
                ConstraintValue::Number(4096.0),
                ConstraintValue::Text("eu".into()),
                ConstraintValue::List(vec!["en".into(), "de".into()])
            ]
        );
    }

    #[test]
    fn wrong_shapes_are_errors_naming_what_was_expected() {
        for bad in ["null", "[1]", r#"{"a": 1}"#] {
            let e = serde_json::from_str::<Scalar>(bad).unwrap_err().to_string();
            assert!(e.contains("a boolean, a number or a string"), "{bad}: {e}");
        }
        for bad in ["1", r#""x""#, "[true]", "null"] {
            let e = serde_json::from_str::<Bound>(bad).unwrap_err().to_string();
            assert!(e.contains("a range such as"), "{bad}: {e}");
        }
        // A range keeps its own checks: unknown keys and non-numbers are refused.
        let e = serde_json::from_str::<Bound>(r#"{"minimum": 1}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("minimum"), "{e}");
        assert!(serde_json::from_str::<Bound>(r#"{"min": "high"}"#).is_err());
        assert!(serde_json::from_str::<ConstraintValue>("[1, 2]").is_err());
        assert!(serde_json::from_str::<ConstraintValue>(r#"{"k": "v"}"#).is_err());
    }

    #[test]
    fn yaml_values_take_the_same_variants() {
        let b: Bound = serde_norway::from_str("{min: 0.9}").unwrap();
        assert_eq!(b.range().and_then(|r| r.min), Some(0.9));
        let c: ConstraintValue = serde_norway::from_str("[en, de]").unwrap();
        assert_eq!(c, ConstraintValue::List(vec!["en".into(), "de".into()]));
        let s: Scalar = serde_norway::from_str("true").unwrap();
        assert_eq!(s, Scalar::Bool(true));
    }
}
