//! `sluice checkpoint info DIR [--json]`.

use std::path::Path;

use serde_json::json;
use sluice::checkpoint::CheckpointStore;

use crate::open::{self, format_time};
use crate::{Failure, Outcome};

pub(crate) fn run(dir: &Path, as_json: bool) -> Outcome {
    let (store, app_id) = open::read_only(dir)?;
    let schema = store.schema_version()?;
    let last = store.last_batch()?;
    let offsets = store.offsets()?;
    let families = store.family_stats()?;
    let states = store.states()?;
    let points = store.restore_points()?;
    // The plan of the next batch, stored before it ran: a restart redoes
    // exactly these ranges. A plan of any other batch is stale and ignored.
    let next_id = last.as_ref().map_or(0, |b| b.id + 1);
    let pending = store.pending_plan()?.filter(|p| p.id == next_id);
    let paused = store.paused_since()?;
    if as_json {
        let value = json!({
            "path": dir.display().to_string(),
            "app_id": app_id,
            "schema_version": schema,
            "last_batch": last.as_ref().map(|b| json!({"id": b.id, "time_ms": b.time_ms, "records": b.records})),
            "offsets": offsets.iter().map(|(tp, o)| json!({"topic": tp.topic.to_string(), "partition": tp.partition, "next_offset": o})).collect::<Vec<_>>(),
            "families": families.iter().map(|f| json!({"name": f.name, "estimated_keys": f.estimated_keys, "sst_bytes": f.sst_bytes, "memtable_bytes": f.memtable_bytes})).collect::<Vec<_>>(),
            "states": states.iter().map(|s| json!({"name": s.name, "operator": s.operator, "params": s.params})).collect::<Vec<_>>(),
            "restore_points": points,
            "paused_since_ms": paused,
            "pending_batch": pending.as_ref().map(|b| json!({"id": b.id, "time_ms": b.time_ms, "ranges": b.ranges.iter().map(|r| json!({"topic": r.topic, "partition": r.partition, "from": r.from, "until": r.until})).collect::<Vec<_>>()})),
        });
        let text =
            serde_json::to_string_pretty(&value).map_err(|e| Failure::failed(e.to_string()))?;
        out!("{text}");
        return Ok(());
    }
    out!("checkpoint      {}", dir.display());
    out!("app id          {app_id}");
    out!("schema version  {schema}");
    match &last {
        Some(b) => out!(
            "last batch      {} at {} ({} records)",
            b.id,
            format_time(b.time_ms),
            b.records
        ),
        None => out!("last batch      none committed"),
    }
    if let Some(since) = paused {
        out!(
            "paused          since {} (the job starts paused; `sluice resume` clears it)",
            format_time(since)
        );
    }
    if let Some(b) = &pending {
        out!(
            "pending batch   {} planned for {}, not committed: the next start redoes these ranges",
            b.id,
            format_time(b.time_ms)
        );
        for r in &b.ranges {
            out!(
                "  {:<30} {:>14} .. {}",
                format!("{}:{}", r.topic, r.partition),
                r.from,
                r.until
            );
        }
    }
    out!("offsets         next offset to read, per partition");
    for (tp, offset) in &offsets {
        out!(
            "  {:<30} {offset:>14}",
            format!("{}:{}", tp.topic, tp.partition)
        );
    }
    out!(
        "families        RocksDB estimates (rocksdb.estimate-num-keys, table files and memtables)"
    );
    out!(
        "  {:<30} {:>14} {:>14} {:>14}",
        "name",
        "~keys",
        "sst bytes",
        "memtable bytes"
    );
    for f in &families {
        out!(
            "  {:<30} {:>14} {:>14} {:>14}",
            f.name,
            f.estimated_keys,
            f.sst_bytes,
            f.memtable_bytes
        );
    }
    if states.is_empty() {
        out!("states          none");
    } else {
        out!("states          name, operator, settings");
        for s in &states {
            let params = if s.params.is_empty() { "-" } else { &s.params };
            out!("  {:<30} {:<20} {params}", s.name, s.operator);
        }
    }
    if points.is_empty() {
        out!("restore points  none");
    } else {
        let ids: Vec<String> = points.iter().map(u64::to_string).collect();
        out!(
            "restore points  batches {} (in {})",
            ids.join(", "),
            dir.join("restore").display()
        );
    }
    Ok(())
}
