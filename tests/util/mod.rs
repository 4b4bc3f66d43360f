//! Helpers shared by the integration tests: brokers to run against and
//! ways to put records into them.

// Each test uses only some of the helpers.
#![allow(dead_code)]

pub(crate) mod job;
pub(crate) mod kafka;
pub(crate) mod oidc;
pub(crate) mod tansu;
pub(crate) mod tls;
pub(crate) mod wordcount;

/// Runs `f` and returns what it logged on this thread (warnings and
/// errors), as text.
pub(crate) fn logged_by<T>(f: impl FnOnce() -> T) -> (T, String) {
    #[derive(Clone, Default)]
    struct Buffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buffer = Buffer::default();
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_max_level(tracing::Level::WARN)
        .with_writer(move || writer.clone())
        .finish();
    let result = tracing::subscriber::with_default(subscriber, f);
    let logs = String::from_utf8_lossy(&buffer.0.lock().unwrap()).into_owned();
    (result, logs)
}
