//! The serde shape of a state's key and value types, recorded in the
//! checkpoint so that a changed type is found when the job starts.

use serde::de::DeserializeOwned;
use serde_reflection::{Tracer, TracerConfig};

/// A description of how a type serialises: its serde data model (fields,
/// their order and types, enum variants) as JSON, with the names of
/// structs and enums but not their module paths, so moving a type between
/// modules keeps its shape while adding, removing, retyping or reordering
/// a field changes it.
///
/// Types whose shape serde cannot trace (a `Deserialize` that needs
/// `deserialize_any`, such as `serde_json::Value`) are described by their
/// Rust type name instead, which changes with their module path too.
///
/// ```
/// use sluice_core::state::shape_of;
///
/// assert_ne!(shape_of::<u64>(), shape_of::<String>());
/// ```
pub fn shape_of<T: DeserializeOwned>() -> String {
    let mut tracer = Tracer::new(TracerConfig::default());
    let traced = tracer
        .trace_simple_type::<T>()
        .map_err(|e| e.to_string())
        .and_then(|(format, _)| {
            let registry = tracer.registry().map_err(|e| e.to_string())?;
            serde_json::to_string(&(format, registry)).map_err(|e| e.to_string())
        });
    traced.unwrap_or_else(|_| format!("rust type {}", std::any::type_name::<T>()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    mod a {
        #[derive(serde::Deserialize)]
        #[allow(dead_code)]
        pub(super) struct Session {
            pub(super) clicks: u64,
            pub(super) first_ms: i64,
        }
    }
    mod b {
        #[derive(serde::Deserialize)]
        #[allow(dead_code)]
        pub(super) struct Session {
            pub(super) clicks: u64,
            pub(super) first_ms: i64,
        }
    }
    #[derive(Deserialize)]
    #[allow(dead_code)]
    struct Session {
        clicks: u64,
        first_ms: i64,
        last_ms: i64,
    }
    #[derive(Deserialize)]
    #[allow(dead_code)]
    enum Kind {
        Open,
        Closed(u32),
    }

    #[test]
    fn a_shape_follows_the_fields_not_the_module() {
        assert_eq!(shape_of::<a::Session>(), shape_of::<b::Session>());
        assert_ne!(shape_of::<a::Session>(), shape_of::<Session>());
        assert_ne!(shape_of::<u64>(), shape_of::<i64>());
        assert_ne!(shape_of::<String>(), shape_of::<(String, u64)>());
        assert!(
            shape_of::<Kind>().contains("Closed"),
            "{}",
            shape_of::<Kind>()
        );
    }
}
