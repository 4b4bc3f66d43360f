//! `sluice rewind DIR --to-batch N [--dry-run]`.

use std::path::Path;

use sluice::checkpoint::{Error, RewindPlan};

use crate::{open, Failure, Outcome};

pub(crate) fn run(dir: &Path, batch: u64, dry_run: bool) -> Outcome {
    let plan = if dry_run {
        // Read-only: a dry run may look while the job runs.
        open::read_only(dir)?.0.rewind_plan(batch)
    } else {
        open::read_write(dir)?.rewind_to(batch)
    };
    let plan = plan.map_err(|error| match error {
        // The operator who finds none needs to know how to turn them on.
        Error::NoRestorePoint { ref available, .. } if available.is_empty() => Failure::failed(
            format!("{error}; the bundled wordcount example takes them with --restore-points N"),
        ),
        other => Failure::from(other),
    })?;
    print(&plan, dry_run);
    Ok(())
}

fn print(plan: &RewindPlan, dry_run: bool) {
    let (verb, would) = if dry_run {
        ("would rewind", "would be ")
    } else {
        ("rewound", "")
    };
    let last = plan
        .last_batch
        .map_or_else(|| "none".to_owned(), |b| b.to_string());
    out!(
        "{verb} checkpoint from batch {last} to batch {} (restore point {})",
        plan.batch,
        plan.restore_point.display()
    );
    out!("offsets:");
    let partitions: std::collections::BTreeSet<_> = plan
        .offsets_before
        .keys()
        .chain(plan.offsets_after.keys())
        .collect();
    for tp in partitions {
        let show = |o: Option<&i64>| o.map_or_else(|| "(none)".to_owned(), i64::to_string);
        out!(
            "  {:<30} {:>12} -> {}",
            format!("{}:{}", tp.topic, tp.partition),
            show(plan.offsets_before.get(tp)),
            show(plan.offsets_after.get(tp))
        );
    }
    out!(
        "results and state {} those right after batch {}; states then: {}",
        if dry_run { "would be" } else { "are now" },
        plan.batch,
        if plan.states_after.is_empty() {
            "none".to_owned()
        } else {
            plan.states_after.join(", ")
        }
    );
    out!(
        "batch records {would}removed: {}",
        describe(&plan.batches_removed)
    );
    out!(
        "restore points {would}removed: {}",
        describe(&plan.restore_points_removed)
    );
    if dry_run {
        out!("dry run: nothing was changed");
    }
}

fn describe(ids: &[u64]) -> String {
    match ids {
        [] => "none".to_owned(),
        [one] => one.to_string(),
        [first, .., last] => format!("{} ({first}..={last})", ids.len()),
    }
}
