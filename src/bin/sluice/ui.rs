//! `sluice ui DIR [--listen HOST:PORT]`: the web UI of a stopped job.

use std::path::Path;

use sluice::checkpoint::CheckpointStore;
use sluice::CheckpointUi;

use crate::{open, Failure, Outcome};

pub(crate) fn run(dir: &Path, listen: &str) -> Outcome {
    let (store, app_id) = open::read_only(dir)?;
    let history = store.batches()?;
    let positions = store.offsets()?;
    let paused = store.paused_since()?.is_some();
    drop(store);
    let ui = CheckpointUi::serve(listen, &app_id, history, &positions, paused)
        .map_err(|e| Failure::failed(e.to_string()))?;
    out!(
        "serving the UI of {} (app {app_id}) at http://{}/ until interrupted",
        dir.display(),
        ui.addr()
    );
    ui.wait();
    Ok(())
}
