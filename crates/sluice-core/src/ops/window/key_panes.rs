//! What a batch-time windowed reduction keeps per key — its partial
//! results by pane and, for the incremental form, its value in the last
//! window — and how that is stored.
//!
//! Pane indexes count panes since the Unix epoch, so they are large
//! (about 1.7 billion for 1 s panes) while a key's panes are a few apart.
//! The stored form keeps one index, `base`, and the others as differences
//! from it, so each pane costs a byte or two instead of five.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{Deserialize, Deserializer, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeStruct, Serializer};

use crate::window::ReduceFn;

/// The layout of the stored form, in the state's parameters: a checkpoint
/// written with another layout (before it, pane indexes were stored whole)
/// is refused at start rather than misread.
pub(super) const LAYOUT: &str = "layout=2";

/// What a windowed reduction keeps per key.
///
/// The plain and the incremental form keep the same thing (the plain form
/// never sets `running`), so a job may switch between them under the same
/// name and length and slide.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct KeyPanes<V> {
    /// The key's reduced values by pane, ascending.
    pub(super) panes: Vec<(i64, V)>,
    /// Incremental form: the key's value in the window ending at pane
    /// `.0`. Absent for a new key and for a key the filter dropped: its
    /// next value is then reduced from its panes.
    pub(super) running: Option<(i64, V)>,
}

impl<V> Default for KeyPanes<V> {
    fn default() -> Self {
        Self {
            panes: Vec::new(),
            running: None,
        }
    }
}

impl<V: Clone> KeyPanes<V> {
    /// Folds `value` into pane `pane`. A value for a pane the running
    /// value already covers (a batch time not after the last window) goes
    /// into it too, so it is subtracted when the pane leaves.
    pub(super) fn add(&mut self, pane: i64, value: V, reduce: &ReduceFn<V>) {
        if let Some((end, running)) = self.running.take() {
            let running = if pane <= end {
                reduce(running, value.clone())
            } else {
                running
            };
            self.running = Some((end, running));
        }
        match self.panes.binary_search_by_key(&pane, |(p, _)| *p) {
            Ok(i) => {
                let (_, old) = self.panes.remove(i);
                self.panes.insert(i, (pane, reduce(old, value)));
            }
            Err(i) => self.panes.insert(i, (pane, value)),
        }
    }

    /// The key's panes `first..=last` reduced; `None` when it has none.
    pub(super) fn fold(&self, first: i64, last: i64, reduce: &ReduceFn<V>) -> Option<V> {
        self.panes
            .iter()
            .filter(|(p, _)| first <= *p && *p <= last)
            .map(|(_, v)| v.clone())
            .reduce(reduce)
    }

    /// The key's value in the window `first..=last`, from `running`, its
    /// value in the window ending at pane `end`: the panes that left the
    /// window taken out and those that entered it added. Also whether any
    /// pane left or entered.
    pub(super) fn slide(
        &self,
        end: i64,
        mut running: V,
        (first, last): (i64, i64),
        reduce: &ReduceFn<V>,
        inverse: &ReduceFn<V>,
    ) -> (V, bool) {
        let mut moved = false;
        for (pane, v) in &self.panes {
            if *pane < first && *pane <= end {
                running = inverse(running, v.clone());
                moved = true;
            } else if *pane > end && first <= *pane && *pane <= last {
                running = reduce(running, v.clone());
                moved = true;
            }
        }
        (running, moved)
    }
}

impl<V> KeyPanes<V> {
    /// The index the stored form counts from: the first pane, or the
    /// running value's end when there is no pane.
    fn base(&self) -> i64 {
        self.panes
            .first()
            .map(|(p, _)| *p)
            .or(self.running.as_ref().map(|(end, _)| *end))
            .unwrap_or(0)
    }
}

/// The stored form: `base`, then every pane index and the running value's
/// end as its difference from `base` (wrapping, so any index round-trips).
#[derive(serde::Deserialize)]
#[serde(rename = "KeyPanes")]
struct Stored<V> {
    base: i64,
    panes: PaneList<V>,
    running: Option<(i64, V)>,
}

/// Stored panes, read into a vector with room for one more: a key read by
/// a batch usually gets a pane in it.
struct PaneList<V>(Vec<(i64, V)>);

impl<'de, V: Deserialize<'de>> Deserialize<'de> for PaneList<V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Panes<V>(PhantomData<V>);

        impl<'de, V: Deserialize<'de>> Visitor<'de> for Panes<V> {
            type Value = PaneList<V>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a sequence of panes")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                // A stored length is not trusted for more than a few pages.
                let len = seq.size_hint().unwrap_or(0).min(4096);
                let mut panes = Vec::with_capacity(len + 1);
                while let Some(pane) = seq.next_element()? {
                    panes.push(pane);
                }
                Ok(PaneList(panes))
            }
        }

        deserializer.deserialize_seq(Panes(PhantomData))
    }
}

impl<V: Serialize> Serialize for KeyPanes<V> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let base = self.base();
        let mut stored = serializer.serialize_struct("KeyPanes", 3)?;
        stored.serialize_field("base", &base)?;
        stored.serialize_field(
            "panes",
            &Offsets {
                panes: &self.panes,
                base,
            },
        )?;
        let running = self
            .running
            .as_ref()
            .map(|(end, v)| (end.wrapping_sub(base), v));
        stored.serialize_field("running", &running)?;
        stored.end()
    }
}

/// The panes as differences from `base`, serialised without a copy.
struct Offsets<'a, V> {
    panes: &'a [(i64, V)],
    base: i64,
}

impl<V: Serialize> Serialize for Offsets<'_, V> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(
            self.panes
                .iter()
                .map(|(p, v)| (p.wrapping_sub(self.base), v)),
        )
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for KeyPanes<V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let Stored {
            base,
            panes: PaneList(mut panes),
            running,
        } = Stored::deserialize(deserializer)?;
        for (p, _) in &mut panes {
            *p = base.wrapping_add(*p);
        }
        Ok(Self {
            panes,
            running: running.map(|(end, v)| (base.wrapping_add(end), v)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{layout, StateDescriptor};
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn the_stored_form_round_trips(
            panes in proptest::collection::btree_map(any::<i64>(), any::<i32>(), 0..12),
            running in proptest::option::of((any::<i64>(), any::<i32>())),
        ) {
            let kept = KeyPanes { panes: panes.into_iter().collect(), running };
            let bytes = layout::encode(&kept).unwrap();
            prop_assert_eq!(layout::decode::<KeyPanes<i32>>(&bytes).unwrap(), kept);
        }
    }

    #[test]
    fn the_checkpoint_records_the_stored_form_as_a_serde_shape() {
        let shape = StateDescriptor::of::<String, KeyPanes<i64>>("w", "op").state_shape;
        assert!(!shape.starts_with("rust type"), "{shape}");
        assert!(
            shape.contains("KeyPanes") && shape.contains("base"),
            "{shape}"
        );
    }

    #[test]
    fn a_full_window_of_counts_takes_a_few_bytes_a_pane() {
        let end = 1_700_000_000;
        let kept = KeyPanes {
            panes: (end - 10..=end).map(|p| (p, 5i64)).collect(),
            running: Some((end, 50i64)),
        };
        // base (5 bytes), 11 panes of 2 bytes, the running value (3 bytes)
        // and the lengths and tags.
        assert!(layout::encode(&kept).unwrap().len() <= 32);
    }
}
