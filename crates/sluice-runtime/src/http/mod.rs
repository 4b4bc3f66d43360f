//! The HTTP endpoint of a running job: web UI, JSON API, Prometheus
//! `/metrics` and runtime control.
//!
//! Off unless [`StreamingContextBuilder::http`](crate::StreamingContextBuilder::http)
//! sets an address. The server runs on a single-threaded tokio runtime on
//! its own thread and never touches the batch path: after each committed
//! batch the driver updates the metrics and publishes a [`monitor`]
//! snapshot (a short lock), and handlers only read snapshots. Control
//! requests are recorded in [`control::Control`]; the driver takes them
//! between batches.

mod api;
pub(crate) mod control;
pub(crate) mod metrics;
pub(crate) mod monitor;
mod ui;

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::error::config;
use crate::{Error, Result};
use monitor::Monitor;

/// Environment variable holding the access token when no token file is set.
pub(crate) const TOKEN_ENV: &str = "SLUICE_HTTP_TOKEN";

/// Where the endpoint listens and the token that guards control requests
/// (no `Debug`: it holds the token).
pub(crate) struct HttpSettings {
    pub(crate) addr: SocketAddr,
    pub(crate) token: Option<String>,
}

impl HttpSettings {
    /// Resolves `addr` and the token (`token_file`, else `$SLUICE_HTTP_TOKEN`);
    /// an address beyond loopback without a token is refused.
    pub(crate) fn resolve(addr: &str, token_file: Option<&PathBuf>) -> Result<Self> {
        let resolved = resolve_addr("http", addr)?;
        let token = match token_file {
            Some(path) => {
                let token = std::fs::read_to_string(path).map_err(|e| {
                    config(
                        "http_token_file",
                        format!("cannot read {}: {e}", path.display()),
                    )
                })?;
                let token = token.trim().to_owned();
                if token.is_empty() {
                    return Err(config(
                        "http_token_file",
                        format!("{} is empty", path.display()),
                    ));
                }
                Some(token)
            }
            None => std::env::var(TOKEN_ENV)
                .ok()
                .map(|t| t.trim().to_owned())
                .filter(|t| !t.is_empty()),
        };
        if !resolved.ip().is_loopback() && token.is_none() {
            return Err(config(
                "http",
                format!(
                    "{resolved} is reachable beyond this machine: set an access token for the \
                     control API with .http_token_file(..) or ${TOKEN_ENV}, or bind a loopback \
                     address such as 127.0.0.1"
                ),
            ));
        }
        Ok(Self {
            addr: resolved,
            token,
        })
    }
}

/// `addr` (`host:port`) as a socket address; errors name `setting`.
fn resolve_addr(setting: &'static str, addr: &str) -> Result<SocketAddr> {
    addr.to_socket_addrs()
        .map_err(|e| config(setting, format!("'{addr}' is not a host:port address: {e}")))?
        .next()
        .ok_or_else(|| config(setting, format!("'{addr}' resolves to no address")))
}

/// The running server; stopped with [`HttpServer::stop`] or on drop.
pub(crate) struct HttpServer {
    pub(crate) addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl HttpServer {
    /// Binds the address (so a port in use fails the job's start) and
    /// serves on a thread of its own.
    pub(crate) fn start(settings: &HttpSettings, monitor: Arc<Monitor>) -> Result<Self> {
        let io = |what, source| Error::Io { what, source };
        let listener =
            std::net::TcpListener::bind(settings.addr).map_err(|source| Error::HttpBind {
                addr: settings.addr,
                source,
            })?;
        listener
            .set_nonblocking(true)
            .map_err(|e| io("set up the HTTP endpoint's socket", e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| io("read the HTTP endpoint's address", e))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .map_err(|e| io("start the HTTP endpoint's runtime", e))?;
        let router = api::router(monitor, settings.token.clone());
        let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("sluice-http".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(listener) {
                        Ok(listener) => listener,
                        Err(error) => {
                            tracing::error!(%error, "HTTP endpoint could not start");
                            return;
                        }
                    };
                    let served = axum::serve(listener, router)
                        .with_graceful_shutdown(async {
                            let _ = stopped.await;
                        })
                        .await;
                    if let Err(error) = served {
                        tracing::error!(%error, "HTTP endpoint stopped");
                    }
                })
            })
            .map_err(|e| io("start the HTTP endpoint's thread", e))?;
        tracing::info!(%addr, token_required = settings.token.is_some(), "HTTP endpoint listening: UI at http://{addr}/, metrics at /metrics");
        Ok(Self {
            addr,
            shutdown: Some(shutdown),
            thread: Some(thread),
        })
    }

    /// Stops serving and waits for the server's thread.
    pub(crate) fn stop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The web UI and JSON API of a stopped job, from its checkpoint's batch
/// history (what `sluice ui DIR` serves). Read-only: control requests are
/// answered 409 Conflict. With no broker asked, the partitions' log start,
/// latest offset and lag are unknown (`null` in the JSON API). There is no
/// `/metrics` (404): metrics come from a running job's endpoint. Stops when
/// dropped.
pub struct CheckpointUi {
    server: HttpServer,
}

impl CheckpointUi {
    /// Serves the last batches of `history` (oldest first) and the committed
    /// `positions` of job `app_id` on `addr` (`host:port`; port 0 picks a
    /// free one; errors name the setting `listen`). It serves reads only, so
    /// an address beyond loopback needs no access token (a running job's
    /// endpoint needs one for its control API). `paused`: whether the
    /// checkpoint keeps the job paused (shown as `paused: true`).
    pub fn serve(
        addr: &str,
        app_id: &str,
        history: Vec<sluice_checkpoint::BatchRecord>,
        positions: &std::collections::BTreeMap<sluice_core::TopicPartition, i64>,
        paused: bool,
    ) -> Result<Self> {
        let settings = HttpSettings {
            addr: resolve_addr("listen", addr)?,
            token: None,
        };
        let monitor = Arc::new(Monitor::from_history(app_id, history, positions));
        if paused {
            monitor.control.start_paused();
        }
        Ok(Self {
            server: HttpServer::start(&settings, monitor)?,
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr
    }

    /// Blocks while it serves (until the process ends).
    pub fn wait(mut self) {
        if let Some(thread) = self.server.thread.take() {
            let _ = thread.join();
        }
    }
}

impl std::fmt::Debug for CheckpointUi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckpointUi")
            .field("addr", &self.server.addr)
            .finish()
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop();
    }
}
