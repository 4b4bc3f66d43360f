//! Keyed state in the checkpoint: the registry of stateful operators, the
//! decision of what a starting job does with the states it finds, and the
//! [`StateStore`] its batches read state through.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use rocksdb::ReadOptions;
use serde::{Deserialize, Serialize};
use sluice_core::state::{Migration, StateDescriptor, StateStore};
use sluice_core::BoxError;

use crate::rocks::Db;

/// A stateful operator as the checkpoint records it (JSON in
/// `sluice_meta`, under `state.<name>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateRecord {
    /// The operator's name.
    pub name: String,
    /// The operator that keeps it, such as `map_with_state`.
    pub operator: String,
    /// The serde shape of its key type.
    pub key_shape: String,
    /// The serde shape of its state type.
    pub state_shape: String,
    /// Settings its stored state depends on, such as a window's length and
    /// slide; empty for most operators (and in checkpoints written before
    /// operators had any).
    #[serde(default)]
    pub params: String,
}

impl From<&StateDescriptor> for StateRecord {
    fn from(d: &StateDescriptor) -> Self {
        Self {
            name: d.name.clone(),
            operator: d.operator.to_owned(),
            key_shape: d.key_shape.clone(),
            state_shape: d.state_shape.clone(),
            params: d.params.clone(),
        }
    }
}

/// What the job declares about states it no longer keeps under the same
/// name or type.
#[derive(Debug, Clone, Default)]
pub struct StateChanges {
    /// States to delete, with their data.
    pub drop: BTreeSet<String>,
    /// States to keep under a new name: old name → new name.
    pub rename: BTreeMap<String, String>,
    /// States whose type changed, with how to convert each stored state.
    pub migrate: BTreeMap<String, Migration>,
}

/// What opening a job's states does to the checkpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct StatePlan {
    /// States declared and not stored yet: registered, family created.
    pub(crate) create: Vec<StateRecord>,
    /// Stored states the job keeps under a new name.
    pub(crate) rename: Vec<(String, StateRecord)>,
    /// Stored states deleted.
    pub(crate) drop: Vec<String>,
    /// Stored states converted to their new type, with the new record.
    pub(crate) migrate: Vec<StateRecord>,
}

impl StatePlan {
    pub(crate) fn is_empty(&self) -> bool {
        self.create.is_empty()
            && self.rename.is_empty()
            && self.drop.is_empty()
            && self.migrate.is_empty()
    }
}

/// Decides what a job declaring `declared` (and `changes`) does with the
/// `stored` states, or says why it must not start. Every state is either
/// kept with the same types, renamed, dropped or new; anything else — a
/// stored state no operator declares, a changed key or state type, a rename
/// onto a name the checkpoint holds or of a name the job still declares —
/// is an error naming the state and what to do, and nothing is changed.
pub(crate) fn plan_states(
    stored: &[StateRecord],
    declared: &[StateDescriptor],
    changes: &StateChanges,
) -> Result<StatePlan, (String, String)> {
    let stored: BTreeMap<&str, &StateRecord> =
        stored.iter().map(|r| (r.name.as_str(), r)).collect();
    let declared: BTreeMap<&str, StateRecord> = declared
        .iter()
        .map(|d| (d.name.as_str(), StateRecord::from(d)))
        .collect();
    let mut plan = StatePlan::default();
    for name in &changes.drop {
        if declared.contains_key(name.as_str()) {
            return Err((
                name.clone(),
                "is declared by an operator of this job and dropped at once; remove one of the two"
                    .into(),
            ));
        }
        if changes.rename.contains_key(name) {
            return Err((name.clone(), "is both dropped and renamed".into()));
        }
        if stored.contains_key(name.as_str()) {
            plan.drop.push(name.clone());
        }
    }
    let mut renamed_to = BTreeSet::new();
    for (old, new) in &changes.rename {
        if !renamed_to.insert(new.as_str()) {
            return Err((new.clone(), "is the new name of two renamed states".into()));
        }
        if old == new {
            return Err((
                old.clone(),
                "is renamed to itself; remove the rename".into(),
            ));
        }
        if declared.contains_key(old.as_str()) {
            // Its family would be dropped after the copy, leaving the
            // operator with nowhere to commit.
            return Err((
                old.clone(),
                format!(
                    "is renamed to '{new}' and declared by an operator of this job at once; \
                     remove one of the two"
                ),
            ));
        }
        let Some(record) = declared.get(new.as_str()) else {
            return Err((
                old.clone(),
                format!("is renamed to '{new}', which no operator of this job declares"),
            ));
        };
        match (stored.get(old.as_str()), stored.get(new.as_str())) {
            // A rename removes the old name in the same write that adds the
            // new one, so both stored is a conflict, not an earlier start.
            (Some(_), Some(_)) => {
                return Err((
                    old.clone(),
                    format!(
                        "is renamed to '{new}', but the checkpoint holds a state named '{new}' \
                         too; drop_state one of the two, or rename to a name it does not hold"
                    ),
                ))
            }
            (None, Some(_)) => {} // renamed by an earlier start; done
            (None, None) => {
                return Err((
                    old.clone(),
                    format!("is renamed to '{new}', but the checkpoint holds neither"),
                ))
            }
            (Some(old_record), None) => {
                check_types(old_record, record).map_err(|reason| (old.clone(), reason))?;
                plan.rename.push((old.clone(), record.clone()));
            }
        }
    }
    for (name, record) in &stored {
        if declared.contains_key(name)
            || changes.drop.contains(*name)
            || changes.rename.contains_key(*name)
        {
            continue;
        }
        return Err((
            (*name).to_owned(),
            format!(
                "is held by the checkpoint (a {}) but no operator of this job declares it; if \
                 the operator was renamed, declare rename_state(\"{name}\", \"<new name>\"); if \
                 its state is no longer needed, declare drop_state(\"{name}\")",
                record.operator
            ),
        ));
    }
    for name in changes.migrate.keys() {
        if !declared.contains_key(name.as_str()) {
            return Err((
                name.clone(),
                format!(
                    "has a migration, but no operator of this job declares it; the job's \
                     states are {:?}",
                    declared.keys().collect::<Vec<_>>()
                ),
            ));
        }
    }
    for (name, record) in &declared {
        // A migration converts to the type the job declares, whatever the
        // checkpoint holds: any other target is a mistake in the job, not
        // something to skip.
        if let Some(migration) = changes.migrate.get(*name) {
            if migration.to_shape() != record.state_shape {
                return Err((
                    (*name).to_owned(),
                    format!(
                        "has a migration from {} to {}, but the job declares {}{}; a migration \
                         must convert to the state type the job declares: fix the migration's \
                         new type, or remove the migrate_state",
                        migration.from_shape(),
                        migration.to_shape(),
                        record.state_shape,
                        stored.get(name).map_or_else(String::new, |old| format!(
                            " (the checkpoint holds {})",
                            old.state_shape
                        )),
                    ),
                ));
            }
        }
        match stored.get(name) {
            Some(old) => match changes.migrate.get(*name) {
                Some(migration) if old.state_shape != record.state_shape => {
                    if migration.from_shape() != old.state_shape {
                        return Err((
                            (*name).to_owned(),
                            format!(
                                "has a migration from {} to {}, but the checkpoint holds {} and \
                                 the job declares {}",
                                migration.from_shape(),
                                migration.to_shape(),
                                old.state_shape,
                                record.state_shape
                            ),
                        ));
                    }
                    let mut unchanged = record.clone();
                    unchanged.state_shape = old.state_shape.clone();
                    check_types(old, &unchanged).map_err(|r| ((*name).to_owned(), r))?;
                    plan.migrate.push(record.clone());
                }
                // Migrated by an earlier start (a migration kept in the
                // job is a no-op), or nothing to migrate.
                _ => check_types(old, record).map_err(|r| ((*name).to_owned(), r))?,
            },
            None if changes.rename.values().any(|n| n == name) => {}
            None => plan.create.push(record.clone()),
        }
    }
    Ok(plan)
}

fn check_types(stored: &StateRecord, declared: &StateRecord) -> Result<(), String> {
    let changed = |what: &str, old: &str, new: &str| {
        format!(
            "has a changed {what} type: the checkpoint holds {old}, the job declares {new}; \
             keep the old type, declare migrate_state with a conversion, or give the operator \
             a new name and drop_state the old one"
        )
    };
    if stored.operator != declared.operator {
        return Err(format!(
            "was kept by a {} and is now declared by a {}; their layouts differ, give the new \
             operator a new name",
            stored.operator, declared.operator
        ));
    }
    // Before the types: a state kept in another layout (such as a window's
    // state written by an older sluice) has other types too, and the
    // settings say why.
    if stored.params != declared.params {
        return Err(format!(
            "was kept with the settings '{}' and is now declared with '{}'; its stored contents \
             only fit the settings they were written with (a window's length and slide, and \
             the layout of its state): keep them, or give the operator a new name and \
             drop_state the old one",
            stored.params, declared.params
        ));
    }
    if stored.key_shape != declared.key_shape {
        return Err(changed("key", &stored.key_shape, &declared.key_shape));
    }
    if stored.state_shape != declared.state_shape {
        return Err(changed("state", &stored.state_shape, &declared.state_shape));
    }
    Ok(())
}

/// Reads keyed state from the checkpoint's database; shared by a batch's
/// worker threads. It sees what was committed when each call began.
pub(crate) struct RocksState {
    pub(crate) db: Arc<Db>,
}

impl StateStore for RocksState {
    fn get_many(&self, family: &str, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, BoxError> {
        let Some(cf) = self.db.cf_handle(family) else {
            return Ok(vec![None; keys.len()]);
        };
        // Keys asked in order spare RocksDB its own sort of the batch; the
        // check costs one comparison a key and keeps a wrong claim out.
        let sorted = keys.is_sorted();
        self.db
            .batched_multi_get_cf(&cf, keys, sorted)
            .into_iter()
            .map(|found| {
                found
                    .map(|value| value.map(|v| v.to_vec()))
                    .map_err(BoxError::from)
            })
            .collect()
    }

    fn scan(
        &self,
        family: &str,
        from: &[u8],
        until: &[u8],
        each: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), BoxError> {
        let Some(cf) = self.db.cf_handle(family) else {
            return Ok(());
        };
        if from >= until {
            return Ok(());
        }
        let mut options = ReadOptions::default();
        options.set_iterate_upper_bound(until.to_vec());
        // The raw iterator lends each key and value instead of copying
        // them into boxes: a window's scan reads every key of a partition.
        let mut iter = self.db.raw_iterator_cf_opt(&cf, options);
        iter.seek(from);
        while let (Some(key), Some(value)) = (iter.key(), iter.value()) {
            if !each(key, value) {
                return Ok(());
            }
            iter.next();
        }
        iter.status()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn declared(name: &str, key: &str, state: &str) -> StateDescriptor {
        StateDescriptor {
            name: name.into(),
            operator: "map_with_state",
            key_shape: key.into(),
            state_shape: state.into(),
            params: String::new(),
        }
    }

    fn stored(name: &str, key: &str, state: &str) -> StateRecord {
        StateRecord::from(&declared(name, key, state))
    }

    #[test]
    fn new_states_are_created_and_kept_ones_left_alone() {
        let plan = plan_states(
            &[stored("a", "Str", "U64")],
            &[declared("a", "Str", "U64"), declared("b", "Str", "U64")],
            &StateChanges::default(),
        )
        .unwrap();
        assert_eq!(plan.create, [stored("b", "Str", "U64")]);
        assert!(plan.rename.is_empty() && plan.drop.is_empty());
    }

    #[test]
    fn an_undeclared_stored_state_is_refused_with_what_to_do() {
        let (name, reason) = plan_states(
            &[stored("old", "Str", "U64")],
            &[],
            &StateChanges::default(),
        )
        .unwrap_err();
        assert_eq!(name, "old");
        assert!(reason.contains("rename_state(\"old\""), "{reason}");
        assert!(reason.contains("drop_state(\"old\")"), "{reason}");
    }

    #[test]
    fn a_changed_type_is_refused_naming_both_shapes() {
        let (name, reason) = plan_states(
            &[stored("a", "Str", "U64")],
            &[declared("a", "Str", "I32")],
            &StateChanges::default(),
        )
        .unwrap_err();
        assert_eq!(name, "a");
        assert!(reason.contains("U64") && reason.contains("I32"), "{reason}");
    }

    #[test]
    fn changed_window_settings_are_refused_naming_both() {
        let mut old = stored("w", "Str", "U64");
        old.params = "batch_time len_ms=600000 slide_ms=60000".into();
        let mut new = declared("w", "Str", "U64");
        new.params = "batch_time len_ms=300000 slide_ms=60000".into();
        let (name, reason) =
            plan_states(&[old.clone()], &[new], &StateChanges::default()).unwrap_err();
        assert_eq!(name, "w");
        assert!(
            reason.contains("len_ms=600000") && reason.contains("len_ms=300000"),
            "{reason}"
        );
        let mut same = declared("w", "Str", "U64");
        same.params = old.params.clone();
        assert!(plan_states(&[old], &[same], &StateChanges::default()).is_ok());
    }

    #[test]
    fn a_window_state_of_an_older_layout_is_refused_naming_the_settings() {
        let mut old = stored("w", "Str", "WindowPanes");
        old.params = "batch_time len_ms=10000 slide_ms=1000".into();
        let mut new = declared("w", "Str", "KeyPanes");
        new.params = "batch_time len_ms=10000 slide_ms=1000 layout=2".into();
        let (name, reason) = plan_states(&[old], &[new], &StateChanges::default()).unwrap_err();
        assert_eq!(name, "w");
        assert!(
            reason.contains("slide_ms=1000'")
                && reason.contains("layout=2")
                && reason.contains("layout of its state"),
            "{reason}"
        );
    }

    #[test]
    fn a_record_written_before_params_reads_with_none() {
        let json =
            r#"{"name":"a","operator":"map_with_state","key_shape":"Str","state_shape":"U64"}"#;
        let record: StateRecord = serde_json::from_str(json).unwrap();
        assert_eq!(record, stored("a", "Str", "U64"));
    }

    #[test]
    fn renames_and_drops_are_planned_once() {
        let changes = StateChanges {
            drop: ["gone".to_owned()].into(),
            rename: [("old".to_owned(), "new".to_owned())].into(),
            ..StateChanges::default()
        };
        let plan = plan_states(
            &[stored("old", "Str", "U64"), stored("gone", "Str", "U64")],
            &[declared("new", "Str", "U64")],
            &changes,
        )
        .unwrap();
        assert_eq!(
            plan.rename,
            [("old".to_owned(), stored("new", "Str", "U64"))]
        );
        assert_eq!(plan.drop, ["gone"]);
        assert!(plan.create.is_empty());
        // Started again after the rename: nothing left to do.
        let plan = plan_states(
            &[stored("new", "Str", "U64")],
            &[declared("new", "Str", "U64")],
            &changes,
        )
        .unwrap();
        assert!(plan.is_empty(), "{plan:?}");
    }

    #[test]
    fn a_rename_onto_a_stored_state_is_refused() {
        let changes = StateChanges {
            rename: [("old".to_owned(), "new".to_owned())].into(),
            ..StateChanges::default()
        };
        let (name, reason) = plan_states(
            &[stored("old", "Str", "U64"), stored("new", "Str", "U64")],
            &[declared("new", "Str", "U64")],
            &changes,
        )
        .unwrap_err();
        assert_eq!(name, "old");
        assert!(reason.contains("holds a state named 'new'"), "{reason}");
        // Two states swapping names are refused too.
        let swap = StateChanges {
            rename: [("a", "b"), ("b", "a")]
                .map(|(o, n)| (o.to_owned(), n.to_owned()))
                .into(),
            ..StateChanges::default()
        };
        let both = [stored("a", "Str", "U64"), stored("b", "Str", "U64")];
        let declared_both = [declared("a", "Str", "U64"), declared("b", "Str", "U64")];
        assert!(plan_states(&both, &declared_both, &swap).is_err());
    }

    #[test]
    fn a_renamed_state_whose_old_name_is_declared_again_is_refused() {
        let changes = StateChanges {
            rename: [("old".to_owned(), "new".to_owned())].into(),
            ..StateChanges::default()
        };
        let (name, reason) = plan_states(
            &[stored("old", "Str", "U64")],
            &[declared("old", "Str", "U64"), declared("new", "Str", "U64")],
            &changes,
        )
        .unwrap_err();
        assert_eq!(name, "old");
        assert!(reason.contains("declared by an operator"), "{reason}");
        let itself = StateChanges {
            rename: [("old".to_owned(), "old".to_owned())].into(),
            ..StateChanges::default()
        };
        let (name, reason) = plan_states(
            &[stored("old", "Str", "U64")],
            &[declared("old", "Str", "U64")],
            &itself,
        )
        .unwrap_err();
        assert_eq!(name, "old");
        assert!(reason.contains("itself"), "{reason}");
    }

    fn migration_to(name: &str, migration: Migration) -> StateChanges {
        StateChanges {
            migrate: [(name.to_owned(), migration)].into(),
            ..StateChanges::default()
        }
    }

    #[test]
    fn a_migration_to_another_type_than_declared_is_refused_naming_every_shape() {
        let u64_to_str = migration_to("a", Migration::new(|n: u64| format!("n={n}")));
        let u64_shape = sluice_core::state::shape_of::<u64>();
        let str_shape = sluice_core::state::shape_of::<String>();
        // The checkpoint already holds the declared type (newuser2 item 6).
        let (name, reason) = plan_states(
            &[stored("a", "Str", &u64_shape)],
            &[declared("a", "Str", &u64_shape)],
            &u64_to_str,
        )
        .unwrap_err();
        assert_eq!(name, "a");
        assert!(
            reason.contains(&format!("from {u64_shape} to {str_shape}"))
                && reason.contains(&format!("the job declares {u64_shape}"))
                && reason.contains(&format!("the checkpoint holds {u64_shape}")),
            "{reason}"
        );
        // A new state: nothing stored, the target is still checked.
        let (_, reason) =
            plan_states(&[], &[declared("a", "Str", &u64_shape)], &u64_to_str).unwrap_err();
        assert!(reason.contains("the job declares"), "{reason}");
    }

    #[test]
    fn a_migration_kept_after_it_ran_is_a_no_op() {
        let u64_to_str = migration_to("a", Migration::new(|n: u64| format!("n={n}")));
        let u64_shape = sluice_core::state::shape_of::<u64>();
        let str_shape = sluice_core::state::shape_of::<String>();
        let plan = plan_states(
            &[stored("a", "Str", &u64_shape)],
            &[declared("a", "Str", &str_shape)],
            &u64_to_str,
        )
        .unwrap();
        assert_eq!(plan.migrate, [stored("a", "Str", &str_shape)]);
        let plan = plan_states(
            &[stored("a", "Str", &str_shape)],
            &[declared("a", "Str", &str_shape)],
            &u64_to_str,
        )
        .unwrap();
        assert!(plan.is_empty(), "{plan:?}");
    }

    #[test]
    fn a_migration_of_a_state_no_operator_declares_is_refused_naming_the_job_states() {
        let typo = migration_to("user_clikcs", Migration::new(|n: u64| format!("n={n}")));
        let str_shape = sluice_core::state::shape_of::<String>();
        let (name, reason) = plan_states(
            &[stored("user_clicks", "Str", &str_shape)],
            &[declared("user_clicks", "Str", &str_shape)],
            &typo,
        )
        .unwrap_err();
        assert_eq!(name, "user_clikcs");
        assert!(
            reason.contains("no operator of this job declares it"),
            "{reason}"
        );
        assert!(reason.contains("\"user_clicks\""), "{reason}");
    }

    #[test]
    fn a_rename_to_a_changed_type_is_refused() {
        let changes = StateChanges {
            rename: [("old".to_owned(), "new".to_owned())].into(),
            ..StateChanges::default()
        };
        let (name, _) = plan_states(
            &[stored("old", "Str", "U64")],
            &[declared("new", "Str", "Str")],
            &changes,
        )
        .unwrap_err();
        assert_eq!(name, "old");
    }
}
