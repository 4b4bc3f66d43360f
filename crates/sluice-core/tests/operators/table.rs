//! Tables and lookups across batches, against a model: each batch first
//! applies its last update of every key, then its lookups read the table.

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use proptest::prelude::*;
use sluice_core::state::MemoryState;
use sluice_core::{BatchEnv, BatchInfo, InlineExecutor, MemoryInput, StreamGraph};

use super::ThreadedExecutor;

/// A record: `Some((key, value))` updates the table (value 0 is a
/// tombstone), `None`-side lookups are `(key, probe)`.
#[derive(Debug, Clone)]
enum Event {
    Update(u8, u8),
    Lookup(u8, u8),
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        (0u8..6, 0u8..4).prop_map(|(k, v)| Event::Update(k, v)),
        (0u8..6, any::<u8>()).prop_map(|(k, p)| Event::Lookup(k, p)),
    ]
}

type Found = Vec<(u8, (u8, Option<u8>))>;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn lookups_see_the_table_after_their_batchs_updates(
        batches in proptest::collection::vec(
            proptest::collection::vec(proptest::collection::vec(event(), 0..8), 1..4),
            1..6,
        ),
        shuffle in 1usize..5,
        threaded in any::<bool>(),
    ) {
        let graph = StreamGraph::new();
        graph.set_shuffle_partitions(NonZeroUsize::new(shuffle).unwrap());
        let events = graph.input().map(|r| r.value.expect("test records have values"));
        let table = events
            .flat_map(|v| (v[0] == b'u').then(|| (v[1], (v[2] != 0).then_some(v[2]))))
            .to_table("table");
        let found: Arc<Mutex<Found>> = Arc::default();
        let out = Arc::clone(&found);
        events
            .flat_map(|v| (v[0] == b'l').then(|| (v[1], v[2])))
            .lookup_left_join(&table)
            .foreach_batch(move |batch, _| {
                out.lock().unwrap().extend(batch);
                Ok::<_, std::io::Error>(())
            })
            .unwrap();

        let state = Arc::new(MemoryState::new());
        let mut model: BTreeMap<u8, u8> = BTreeMap::new();
        for (id, partitions) in batches.iter().enumerate() {
            // Each key's last update in arrival order: partition order, then
            // offset, as the shuffle keeps it.
            for event in partitions.iter().flatten() {
                if let Event::Update(k, v) = event {
                    match v {
                        0 => model.remove(k),
                        v => model.insert(*k, *v),
                    };
                }
            }
            let mut expected: Found = partitions
                .iter()
                .flatten()
                .filter_map(|e| match e {
                    Event::Lookup(k, p) => Some((*k, (*p, model.get(k).copied()))),
                    Event::Update(..) => None,
                })
                .collect();
            let input = partitions.iter().enumerate().fold(MemoryInput::new(), |input, (p, events)| {
                input.with_partition("events", p as i32, events.iter().map(|e| match e {
                    Event::Update(k, v) => vec![b'u', *k, *v],
                    Event::Lookup(k, p) => vec![b'l', *k, *p],
                }))
            });
            let info = BatchInfo::new(id as u64, SystemTime::now(), input.full_ranges());
            let env = if threaded {
                BatchEnv::new(info, Arc::new(input), Arc::new(ThreadedExecutor))
            } else {
                BatchEnv::new(info, Arc::new(input), Arc::new(InlineExecutor))
            };
            let output = graph.run(env.with_state(state.clone())).unwrap();
            state.apply(&output.writes);
            let mut seen = std::mem::take(&mut *found.lock().unwrap());
            seen.sort();
            expected.sort();
            prop_assert_eq!(seen, expected, "batch {}", id);
        }
    }
}
