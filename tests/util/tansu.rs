//! A real Kafka-protocol broker for integration tests: a `tansu` (or
//! `nisshi`, tansu's successor) child process on a free loopback port.
//!
//! ```ignore
//! let broker = Tansu::start();
//! broker.create_topic("words", 3);
//! kafka::produce(&broker.bootstrap(), "words", None, ["a", "b"]);
//! ```
//!
//! `make setup` installs the binary. Its output goes to a log file; when a
//! test panics while a broker is alive, the log is kept and its tail
//! printed. `TANSU_LOG` sets the broker's `RUST_LOG` (default `warn`).
//!
//! `SLUICE_TEST_BROKER=nisshi` runs `nisshi` instead of `tansu` (same
//! command line; binary from `$NISSHI_BIN`, `PATH` or `~/.cargo/bin`), to
//! compare the two; unset or `tansu` runs tansu.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::metadata::Metadata;
use tempfile::TempDir;

/// How long the broker may take to answer after a start, and a new topic
/// to show all its partitions.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How many fresh ports to try when another process takes the probed one
/// before tansu binds it.
const PORT_ATTEMPTS: usize = 3;

/// Which broker program runs: `SLUICE_TEST_BROKER`, `tansu` by default.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Tansu,
    Nisshi,
}

impl Kind {
    /// The broker chosen by `SLUICE_TEST_BROKER` (`tansu` or `nisshi`).
    pub(crate) fn from_env() -> Kind {
        match std::env::var("SLUICE_TEST_BROKER").as_deref() {
            Err(_) | Ok("") | Ok("tansu") => Kind::Tansu,
            Ok("nisshi") => Kind::Nisshi,
            Ok(other) => panic!("SLUICE_TEST_BROKER={other}: expected tansu or nisshi"),
        }
    }

    /// The program's name, on `PATH` and in messages.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Tansu => "tansu",
            Kind::Nisshi => "nisshi",
        }
    }

    /// The variable that names the binary explicitly.
    fn bin_var(self) -> &'static str {
        match self {
            Kind::Tansu => "TANSU_BIN",
            Kind::Nisshi => "NISSHI_BIN",
        }
    }

    /// The sqlite file that [`Tansu::start_on_disk`] keeps in its dir.
    pub(crate) fn db_file(self) -> &'static str {
        match self {
            Kind::Tansu => "tansu.db",
            Kind::Nisshi => "nisshi.db",
        }
    }
}

/// A running tansu (or nisshi, see [`Kind`]) broker. Killed on drop.
pub(crate) struct Tansu {
    kind: Kind,
    bin: PathBuf,
    port: u16,
    /// `host:port` the broker sends clients to, when not its own port.
    advertised: Option<String>,
    storage: Storage,
    child: Option<Child>,
    log_path: PathBuf,
    /// Holds the log (and the sqlite file of [`Tansu::start`]); `None` once
    /// kept for a failed test.
    log_dir: Option<TempDir>,
}

enum Storage {
    /// `memory://`: lost when the process stops.
    Memory,
    /// `sqlite://tansu.db` in this directory: survives a restart.
    Sqlite(PathBuf),
}

impl Storage {
    /// `--storage-engine`; sqlite's path is relative to the working dir.
    fn url(&self, kind: Kind) -> String {
        match self {
            Storage::Memory => format!("memory://{}/", kind.name()),
            Storage::Sqlite(_) => format!("sqlite://{}", kind.db_file()),
        }
    }
}

impl Tansu {
    /// Starts a broker that keeps its data in sqlite in a temp dir, and
    /// waits until it answers. Data survives [`restart`](Self::restart).
    ///
    /// This, not [`start_in_memory`](Self::start_in_memory), is the broker
    /// for tests that read watermarks: tansu 0.6's memory storage answers
    /// ListOffsets(latest) with the last batch's base offset + 1, so after
    /// a 10-record batch the high watermark reads 1 instead of 10.
    pub(crate) fn start() -> Self {
        Self::launch(|tmp| Storage::Sqlite(tmp.to_path_buf()), None)
    }

    /// Like [`start`](Self::start), but the broker tells clients to
    /// connect to `advertised` (`host:port`), where a proxy in front of it
    /// listens (see `tls::TlsListener`).
    pub(crate) fn start_behind(advertised: &str) -> Self {
        Self::launch(
            |tmp| Storage::Sqlite(tmp.to_path_buf()),
            Some(advertised.to_owned()),
        )
    }

    /// Starts a broker with `memory://` storage: the fastest (for
    /// throughput), but its high watermarks are wrong (see
    /// [`start`](Self::start)), and its data is lost on restart. Fetching
    /// records works.
    pub(crate) fn start_in_memory() -> Self {
        Self::launch(|_| Storage::Memory, None)
    }

    /// Starts a broker that keeps its data in `dir/tansu.db` (nisshi:
    /// `nisshi.db`, see [`Kind::db_file`]), so that the test can look at or
    /// reuse it.
    pub(crate) fn start_on_disk(dir: impl AsRef<Path>) -> Self {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("creating tansu data dir {}: {e}", dir.display()));
        Self::launch(|_| Storage::Sqlite(dir), None)
    }

    /// Starts a broker with Kafka transactions (nisshi 0.7, sqlite
    /// storage): transactional producers and fencing, `read_committed`
    /// fetches that stop at the last stable offset, and offsets committed
    /// inside transactions. (Its `read_committed` fetches do return records
    /// of aborted transactions; see `tests/sink.rs`.) tansu 0.6 and later
    /// nisshi releases refuse transactional producers.
    ///
    /// The binary is `$NISSHI_TXN_BIN`, or where `make setup` installs it:
    /// `~/.cache/sluice-nisshi-0.7.0/bin/nisshi`.
    pub(crate) fn start_transactional() -> Self {
        Self::launch_with(
            Kind::Nisshi,
            transactional_bin(),
            |tmp| Storage::Sqlite(tmp.to_path_buf()),
            None,
        )
    }

    /// `storage` gets the broker's own temp dir, which also holds the log.
    fn launch(storage: impl FnOnce(&Path) -> Storage, advertised: Option<String>) -> Self {
        Self::launch_kind(Kind::from_env(), storage, advertised)
    }

    fn launch_kind(
        kind: Kind,
        storage: impl FnOnce(&Path) -> Storage,
        advertised: Option<String>,
    ) -> Self {
        Self::launch_with(kind, broker_bin(kind), storage, advertised)
    }

    fn launch_with(
        kind: Kind,
        bin: PathBuf,
        storage: impl FnOnce(&Path) -> Storage,
        advertised: Option<String>,
    ) -> Self {
        let log_dir = tempfile::Builder::new()
            .prefix(&format!("{}-", kind.name()))
            .tempdir()
            .unwrap_or_else(|e| panic!("creating a temp dir for {}: {e}", kind.name()));
        let storage = storage(log_dir.path());
        let mut broker = Tansu {
            kind,
            bin,
            port: 0,
            advertised,
            storage,
            child: None,
            log_path: log_dir.path().join(format!("{}.log", kind.name())),
            log_dir: Some(log_dir),
        };
        for attempt in 1..=PORT_ATTEMPTS {
            broker.port = free_port();
            match broker.spawn_and_wait() {
                Ok(()) => return broker,
                Err(e) if attempt < PORT_ATTEMPTS => {
                    eprintln!(
                        "{} on port {} failed ({e}); trying another port",
                        kind.name(),
                        broker.port
                    );
                    broker.stop();
                }
                Err(e) => broker.fail(&e),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    /// Which broker program this is.
    pub(crate) fn kind(&self) -> Kind {
        self.kind
    }

    /// `host:port` for `bootstrap.servers`.
    pub(crate) fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The broker's URL as tansu's own commands take it.
    pub(crate) fn url(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.port)
    }

    /// The file that receives the broker's stdout and stderr.
    pub(crate) fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Creates `name` with `partitions` partitions and waits until the
    /// broker's metadata shows all of them with a leader.
    pub(crate) fn create_topic(&self, name: &str, partitions: i32) {
        let mut cmd = Command::new(&self.bin);
        cmd.args(["topic", "create", name, "--partitions"])
            .arg(partitions.to_string())
            .args(["--broker", &self.url()]);
        self.isolate(&mut cmd);
        let out = cmd
            .output()
            .unwrap_or_else(|e| panic!("running {} topic create: {e}", self.bin.display()));
        if !out.status.success() {
            self.fail(&format!(
                "`{} topic create {name} --partitions {partitions}` exited with {}:\n{}{}",
                self.kind.name(),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
            ));
        }

        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let seen = self
                .metadata(Some(name), Duration::from_secs(5))
                .ok()
                .and_then(|md| {
                    let topic = md.topics().iter().find(|t| t.name() == name)?;
                    let ready = topic.error().is_none()
                        && topic
                            .partitions()
                            .iter()
                            .all(|p| p.error().is_none() && p.leader() >= 0);
                    ready.then(|| topic.partitions().len())
                });
            if seen == Some(partitions as usize) {
                return;
            }
            if Instant::now() >= deadline {
                self.fail(&format!(
                    "topic {name} shows {seen:?} ready partitions, not {partitions}, \
                     after {READY_TIMEOUT:?}"
                ));
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Kills the broker and waits for it to exit. Does nothing if it is not
    /// running.
    pub(crate) fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Already exited is fine: wait() reaps it either way.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the broker if it runs, then starts it again on the same port
    /// and storage and waits until it answers. Topics and records come
    /// back, except with [`start_in_memory`](Self::start_in_memory).
    pub(crate) fn restart(&mut self) {
        self.stop();
        if let Err(e) = self.spawn_and_wait() {
            self.fail(&e);
        }
    }

    /// Whether the broker process is running.
    pub(crate) fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    fn spawn_and_wait(&mut self) -> Result<(), String> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .map_err(|e| format!("opening {}: {e}", self.log_path.display()))?;
        let log_err = log
            .try_clone()
            .map_err(|e| format!("cloning the log handle: {e}"))?;

        let url = self.url();
        let advertised = match &self.advertised {
            Some(address) => format!("tcp://{address}"),
            None => url.clone(),
        };
        let mut cmd = Command::new(&self.bin);
        cmd.args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &advertised,
        ])
        .args(["--storage-engine", &self.storage.url(self.kind)])
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err);
        self.isolate(&mut cmd);
        let child = cmd
            .spawn()
            .map_err(|e| format!("spawning {}: {e}", self.bin.display()))?;
        self.child = Some(child);
        self.wait_ready()
    }

    /// Keeps the caller's environment from steering tansu: it reads a
    /// `.env` file from its working directory up, and settings such as
    /// `SCHEMA_REGISTRY` from the environment (nisshi also reads the
    /// listener, storage, cluster and group settings from it).
    fn isolate(&self, cmd: &mut Command) {
        let workdir = match &self.storage {
            Storage::Sqlite(dir) => dir.as_path(),
            Storage::Memory => self.log_path.parent().expect("the log is in a dir"),
        };
        cmd.current_dir(workdir);
        for var in [
            "SCHEMA_REGISTRY",
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "CLUSTER_ID",
            "LISTENER_URL",
            "ADVERTISED_LISTENER_URL",
            "STORAGE_ENGINE",
            "GROUP_INITIAL_REBALANCE_DELAY",
            "GROUP_POLL_INTERVAL",
        ] {
            cmd.env_remove(var);
        }
        cmd.env(
            "RUST_LOG",
            std::env::var("TANSU_LOG").unwrap_or_else(|_| "warn".to_owned()),
        );
    }

    /// Polls until a metadata request succeeds: the port being open is not
    /// enough, the broker must also speak Kafka.
    fn wait_ready(&mut self) -> Result<(), String> {
        let addr: SocketAddr = ([127, 0, 0, 1], self.port).into();
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(format!(
                        "{} exited with {status} before answering",
                        self.kind.name()
                    ));
                }
            }
            // A plain connect first keeps librdkafka's "connection refused"
            // noise out of the test output while the broker boots.
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
                && self
                    .metadata(None, Duration::from_secs(2))
                    .is_ok_and(|md| !md.brokers().is_empty())
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{} did not answer within {READY_TIMEOUT:?}",
                    self.kind.name()
                ));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    fn metadata(&self, topic: Option<&str>, timeout: Duration) -> Result<Metadata, String> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .create()
            .map_err(|e| e.to_string())?;
        consumer
            .fetch_metadata(topic, timeout)
            .map_err(|e| e.to_string())
    }

    /// Panics with `msg`, where the log is, and the log's tail.
    fn fail(&self, msg: &str) -> ! {
        panic!(
            "{msg}\n{} log {}:\n{}",
            self.kind.name(),
            self.log_path.display(),
            log_tail(&self.log_path)
        );
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        self.stop();
        if thread::panicking() {
            if let Some(dir) = self.log_dir.take() {
                let _ = dir.keep();
            }
            eprintln!(
                "{} on port {} logged to {} (kept); last lines:\n{}",
                self.kind.name(),
                self.port,
                self.log_path.display(),
                log_tail(&self.log_path)
            );
        }
    }
}

/// `$TANSU_BIN`, else `tansu` on `PATH`, else `~/.cargo/bin/tansu` (for
/// nisshi: `$NISSHI_BIN`, `nisshi`).
/// The nisshi 0.7 binary of [`Tansu::start_transactional`], checked to be
/// that version: later ones refuse transactional producers.
fn transactional_bin() -> PathBuf {
    const VERSION: &str = "0.7.0";
    let bin = std::env::var_os("NISSHI_TXN_BIN")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|home| {
                Path::new(&home)
                    .join(format!(".cache/sluice-nisshi-{VERSION}"))
                    .join("bin/nisshi")
            })
        })
        .expect("HOME is set");
    let version = Command::new(&bin)
        .arg("--version")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
        .unwrap_or_else(|e| {
            panic!(
                "the transaction tests' broker, nisshi {VERSION}, is not at {} ({e}): run \
                 `make setup` (or set NISSHI_TXN_BIN)",
                bin.display()
            )
        });
    assert!(
        version.split_whitespace().any(|word| word == VERSION),
        "{} is {version:?}, not nisshi {VERSION}: later releases refuse transactional \
         producers; run `make setup`",
        bin.display()
    );
    bin
}

fn broker_bin(kind: Kind) -> PathBuf {
    let (name, var) = (kind.name(), kind.bin_var());
    if let Some(bin) = std::env::var_os(var) {
        let bin = PathBuf::from(bin);
        assert!(bin.is_file(), "{var}={} is not a file", bin.display());
        return bin;
    }
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    });
    let in_cargo_home = || {
        let cargo_home = std::env::var_os("CARGO_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cargo")))?;
        Some(cargo_home.join("bin").join(name)).filter(|p| p.is_file())
    };
    on_path
        .or_else(in_cargo_home)
        .unwrap_or_else(|| match kind {
            Kind::Tansu => panic!(
                "the tansu broker is not installed (looked at $TANSU_BIN, PATH and \
             ~/.cargo/bin): run `make setup`"
            ),
            Kind::Nisshi => panic!(
                "SLUICE_TEST_BROKER=nisshi but nisshi is not installed (looked at \
             $NISSHI_BIN, PATH and ~/.cargo/bin): `cargo install nisshi --locked`"
            ),
        })
}

/// A loopback port that was free a moment ago. Another process may take it
/// before tansu binds it; `launch` then tries another.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("binding an ephemeral loopback port")
        .port()
}

/// The last 40 lines of the log, or why they could not be read.
fn log_tail(path: &Path) -> String {
    const MAX_BYTES: u64 = 16 * 1024;
    let read = || -> std::io::Result<String> {
        let mut file = File::open(path)?;
        let len = file.metadata()?.len();
        file.seek(SeekFrom::Start(len.saturating_sub(MAX_BYTES)))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    match read() {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(40)..].join("\n")
        }
        Err(e) => format!("(cannot read the log: {e})"),
    }
}
