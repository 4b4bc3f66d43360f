//! A postcard decoder driven by a serde shape, for state whose Rust types
//! the tool does not know.
//!
//! The checkpoint records each state's key and state types as
//! serde-reflection formats (JSON of `(Format, Registry)`). postcard is
//! not self-describing, but with the format its wire is simple: varints
//! for integers wider than a byte (zig-zag for signed ones), a varint
//! length before strings, bytes, sequences and maps, a byte for `bool` and
//! the `Option` tag, a varint variant index before an enum's content, and
//! nothing for struct field names. This walks the bytes by the format and
//! builds a JSON value.

use serde_json::{json, Map, Value};
use serde_reflection::{ContainerFormat, Format, Named, Registry, VariantFormat};

/// A recorded shape: the root format and the containers it names.
pub(crate) struct Shape {
    format: Format,
    registry: Registry,
}

impl Shape {
    /// Parses a shape as the checkpoint stores it; `None` for a type that
    /// was recorded by its Rust name because serde could not trace it.
    pub(crate) fn parse(recorded: &str) -> Option<Self> {
        let (format, registry) = serde_json::from_str(recorded).ok()?;
        Some(Self { format, registry })
    }

    /// `Option<i64>`: the deadlines stored after each state.
    pub(crate) fn option_i64() -> Self {
        Self {
            format: Format::Option(Box::new(Format::I64)),
            registry: Registry::new(),
        }
    }

    /// Decodes one value of this shape from the front of `bytes`; returns
    /// it and the bytes left.
    pub(crate) fn decode<'a>(&self, bytes: &'a [u8]) -> Result<(Value, &'a [u8]), String> {
        let mut reader = Reader {
            bytes,
            registry: &self.registry,
        };
        let value = reader.format(&self.format, 0)?;
        Ok((value, reader.bytes))
    }
}

/// Nesting beyond this is refused, so damaged bytes cannot recurse
/// without end.
const MAX_DEPTH: usize = 64;

struct Reader<'a, 'r> {
    bytes: &'a [u8],
    registry: &'r Registry,
}

impl Reader<'_, '_> {
    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        if self.bytes.len() < n {
            return Err(format!("needs {n} more bytes, {} left", self.bytes.len()));
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }

    fn byte(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn varint(&mut self) -> Result<u128, String> {
        let mut value: u128 = 0;
        for shift in (0..19).map(|i| i * 7) {
            let b = self.byte()?;
            value |= u128::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("a varint is longer than 19 bytes".into())
    }

    fn signed(&mut self) -> Result<i128, String> {
        let raw = self.varint()?;
        Ok((raw >> 1) as i128 ^ -((raw & 1) as i128))
    }

    fn len(&mut self) -> Result<usize, String> {
        let n = self.varint()?;
        // Every element takes at least... nothing (a unit), so only bound
        // lengths of byte data by what is left.
        usize::try_from(n).map_err(|_| format!("length {n} is too large"))
    }

    fn string(&mut self) -> Result<String, String> {
        let n = self.len()?;
        let raw = self.take(n)?;
        String::from_utf8(raw.to_vec()).map_err(|_| "a string is not UTF-8".into())
    }

    fn format(&mut self, format: &Format, depth: usize) -> Result<Value, String> {
        if depth > MAX_DEPTH {
            return Err("the value nests too deep".into());
        }
        let d = depth + 1;
        Ok(match format {
            Format::Unit => Value::Null,
            Format::Bool => match self.byte()? {
                0 => json!(false),
                1 => json!(true),
                b => return Err(format!("{b} is not a bool")),
            },
            Format::I8 => json!(self.byte()? as i8),
            Format::U8 => json!(self.byte()?),
            Format::I16 | Format::I32 | Format::I64 => number(self.signed()?),
            Format::I128 => json!(self.signed()?.to_string()),
            Format::U16 | Format::U32 | Format::U64 => unsigned(self.varint()?),
            Format::U128 => json!(self.varint()?.to_string()),
            Format::F32 => {
                let raw: [u8; 4] = self.take(4)?.try_into().expect("4 bytes");
                json!(f32::from_le_bytes(raw))
            }
            Format::F64 => {
                let raw: [u8; 8] = self.take(8)?.try_into().expect("8 bytes");
                json!(f64::from_le_bytes(raw))
            }
            Format::Char | Format::Str => json!(self.string()?),
            Format::Bytes => {
                let n = self.len()?;
                json!(hex(self.take(n)?))
            }
            Format::Option(inner) => match self.byte()? {
                0 => Value::Null,
                1 => self.format(inner, d)?,
                b => return Err(format!("{b} is not an Option tag")),
            },
            Format::Seq(inner) => {
                let n = self.len()?;
                let mut items = Vec::new();
                for _ in 0..n {
                    items.push(self.format(inner, d)?);
                }
                Value::Array(items)
            }
            Format::Map { key, value } => {
                let n = self.len()?;
                let mut pairs = Vec::new();
                for _ in 0..n {
                    let k = self.format(key, d)?;
                    let v = self.format(value, d)?;
                    pairs.push((k, v));
                }
                if pairs.iter().all(|(k, _)| k.is_string()) {
                    let map: Map<String, Value> = pairs
                        .into_iter()
                        .map(|(k, v)| (k.as_str().unwrap_or_default().to_owned(), v))
                        .collect();
                    Value::Object(map)
                } else {
                    Value::Array(pairs.into_iter().map(|(k, v)| json!([k, v])).collect())
                }
            }
            Format::Tuple(items) => Value::Array(
                items
                    .iter()
                    .map(|f| self.format(f, d))
                    .collect::<Result<_, _>>()?,
            ),
            Format::TupleArray { content, size } => Value::Array(
                (0..*size)
                    .map(|_| self.format(content, d))
                    .collect::<Result<_, _>>()?,
            ),
            Format::TypeName(name) => {
                let container = self
                    .registry
                    .get(name)
                    .ok_or_else(|| format!("the shape names {name} but does not describe it"))?;
                self.container(container, d)?
            }
            Format::Variable(_) => return Err("the shape is incomplete".into()),
        })
    }

    fn fields(&mut self, fields: &[Named<Format>], depth: usize) -> Result<Value, String> {
        let mut map = Map::new();
        for field in fields {
            map.insert(field.name.clone(), self.format(&field.value, depth)?);
        }
        Ok(Value::Object(map))
    }

    fn container(&mut self, container: &ContainerFormat, depth: usize) -> Result<Value, String> {
        Ok(match container {
            ContainerFormat::UnitStruct => Value::Null,
            ContainerFormat::NewTypeStruct(inner) => self.format(inner, depth)?,
            ContainerFormat::TupleStruct(items) => {
                self.format(&Format::Tuple(items.clone()), depth)?
            }
            ContainerFormat::Struct(fields) => self.fields(fields, depth)?,
            ContainerFormat::Enum(variants) => {
                let index = self.varint()?;
                let variant = u32::try_from(index)
                    .ok()
                    .and_then(|i| variants.get(&i))
                    .ok_or_else(|| format!("{index} is not a variant index of the enum"))?;
                let content = match &variant.value {
                    VariantFormat::Unit => return Ok(json!(variant.name)),
                    VariantFormat::NewType(inner) => self.format(inner, depth)?,
                    VariantFormat::Tuple(items) => {
                        self.format(&Format::Tuple(items.clone()), depth)?
                    }
                    VariantFormat::Struct(fields) => self.fields(fields, depth)?,
                    VariantFormat::Variable(_) => return Err("the shape is incomplete".into()),
                };
                json!({ variant.name.clone(): content })
            }
        })
    }
}

fn number(n: i128) -> Value {
    i64::try_from(n).map_or_else(|_| json!(n.to_string()), |n| json!(n))
}

fn unsigned(n: u128) -> Value {
    u64::try_from(n).map_or_else(|_| json!(n.to_string()), |n| json!(n))
}

/// Lowercase hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::{Deserialize, Serialize};
    use serde_reflection::{Tracer, TracerConfig};

    #[derive(Serialize, Deserialize)]
    struct Session {
        clicks: u64,
        first_ms: i64,
        pages: Vec<String>,
        last: Option<(u16, bool)>,
        score: f64,
    }

    #[derive(Serialize, Deserialize)]
    enum Kind {
        Open,
        Closed(i32),
        Moved { to: String },
    }

    /// What sluice-core records (`state::shape::shape_of`).
    fn shape_of<T: serde::de::DeserializeOwned>() -> String {
        let mut tracer = Tracer::new(TracerConfig::default());
        let (format, _) = tracer.trace_simple_type::<T>().unwrap();
        serde_json::to_string(&(format, tracer.registry().unwrap())).unwrap()
    }

    fn round_trip<T: Serialize + serde::de::DeserializeOwned>(value: &T) -> Value {
        let shape = Shape::parse(&shape_of::<T>()).expect("a traceable shape");
        let bytes = postcard::to_stdvec(value).unwrap();
        let (decoded, rest) = shape.decode(&bytes).unwrap();
        assert!(rest.is_empty(), "{} bytes left", rest.len());
        decoded
    }

    #[test]
    fn decodes_what_postcard_wrote() {
        let session = Session {
            clicks: 300,
            first_ms: -1_700_000_000_000,
            pages: vec!["a".into(), "ü".into()],
            last: Some((65_535, true)),
            score: 0.5,
        };
        assert_eq!(
            round_trip(&session),
            json!({"clicks": 300, "first_ms": -1_700_000_000_000i64, "pages": ["a", "ü"],
                   "last": [65535, true], "score": 0.5})
        );
        assert_eq!(round_trip(&Kind::Open), json!("Open"));
        assert_eq!(round_trip(&Kind::Closed(-3)), json!({"Closed": -3}));
        assert_eq!(
            round_trip(&Kind::Moved { to: "x".into() }),
            json!({"Moved": {"to": "x"}})
        );
        assert_eq!(round_trip(&"word".to_owned()), json!("word"));
        assert_eq!(
            round_trip(&(u64::MAX, i64::MIN)),
            json!([u64::MAX, i64::MIN])
        );
    }

    #[test]
    fn short_or_foreign_bytes_are_errors_not_panics() {
        let shape = Shape::parse(&shape_of::<Session>()).unwrap();
        let bytes = postcard::to_stdvec(&(5u64, 7i64)).unwrap();
        assert!(shape.decode(&bytes).is_err());
        assert!(shape.decode(&[0xff; 40]).is_err());
        assert!(Shape::parse("rust type serde_json::Value").is_none());
    }
}
