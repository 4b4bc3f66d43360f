//! SIGINT/SIGTERM: the first stops gracefully, the second exits at once.

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::{Handle, Signals};

use crate::context::StopHandle;
use crate::{Error, Result};

/// Exit status of a process aborted by a second signal (128 + SIGINT).
const ABORT_STATUS: i32 = 130;

/// Listens for stop signals until [`Handle::close`] is called.
pub(crate) fn install(stop: StopHandle) -> Result<Handle> {
    let mut signals = Signals::new([SIGINT, SIGTERM]).map_err(|source| Error::Io {
        what: "install the SIGINT/SIGTERM handler",
        source,
    })?;
    let handle = signals.handle();
    std::thread::Builder::new()
        .name("sluice-signals".into())
        .spawn(move || {
            let mut received = 0;
            for signal in signals.forever() {
                received += 1;
                if received == 1 {
                    tracing::info!(signal, "stop signal: finishing and committing the batch in flight, then stopping (send it again to abort)");
                    stop.stop(true);
                } else {
                    // Safe at any point: a commit is one atomic RocksDB
                    // write, so the checkpoint holds the last committed batch.
                    tracing::warn!(signal, "second stop signal: exiting without committing the batch in flight");
                    std::process::exit(ABORT_STATUS);
                }
            }
        })
        .map_err(|source| Error::Io {
            what: "start the signal thread",
            source,
        })?;
    Ok(handle)
}
