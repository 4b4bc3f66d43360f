//! A stand-in OAuth token endpoint on loopback: it records the requests
//! librdkafka's OIDC client sends and answers each with an unsigned token.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// `{"alg":"none"}.{"sub":"sluice","exp":<year 2100>}.signature`: librdkafka
/// reads the subject and expiry, and never checks the signature.
const TOKEN: &str = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.\
                     eyJzdWIiOiJzbHVpY2UiLCJpYXQiOjE3MDAwMDAwMDAsImV4cCI6NDEwMjQ0NDgwMH0.\
                     c2lnbmF0dXJl";

type Requests = Arc<(Mutex<Vec<String>>, Condvar)>;

/// Serves `POST /token` until dropped.
pub(crate) struct TokenEndpoint {
    address: SocketAddr,
    requests: Requests,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TokenEndpoint {
    pub(crate) fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding a loopback port");
        let address = listener.local_addr().unwrap();
        let requests = Requests::default();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (requests, stop) = (Arc::clone(&requests), Arc::clone(&stop));
            thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    if let Some(request) = stream.ok().and_then(answer) {
                        let (list, arrived) = &*requests;
                        list.lock().unwrap().push(request);
                        arrived.notify_all();
                    }
                }
            })
        };
        Self {
            address,
            requests,
            stop,
            thread: Some(thread),
        }
    }

    /// For `sasl.oauthbearer.token.endpoint.url`.
    pub(crate) fn url(&self) -> String {
        format!("http://{}/token", self.address)
    }

    /// The first request (head and body), once one arrived; fails the test
    /// after `timeout`.
    pub(crate) fn wait_for_request(&self, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let (list, arrived) = &*self.requests;
        let mut requests = list.lock().unwrap();
        loop {
            if let Some(first) = requests.first() {
                return first.clone();
            }
            let now = Instant::now();
            assert!(now < deadline, "no token request within {timeout:?}");
            requests = arrived.wait_timeout(requests, deadline - now).unwrap().0;
        }
    }
}

impl Drop for TokenEndpoint {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the blocked accept.
        let _ = TcpStream::connect(self.address);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Reads one HTTP request and answers it with [`TOKEN`]; returns the
/// request, or `None` if it was cut short.
fn answer(mut stream: TcpStream) -> Option<String> {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let mut bytes = Vec::new();
    let mut chunk = [0; 4096];
    let complete = |bytes: &[u8]| {
        let text = String::from_utf8_lossy(bytes);
        let (head, body) = text.split_once("\r\n\r\n")?;
        let length = head
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse::<usize>().ok())?
            })
            .unwrap_or(0);
        (body.len() >= length).then(|| text.to_string())
    };
    let request = loop {
        let n = stream.read(&mut chunk).ok().filter(|n| *n > 0)?;
        bytes.extend_from_slice(&chunk[..n]);
        if let Some(request) = complete(&bytes) {
            break request;
        }
    };
    let body = format!(r#"{{"access_token":"{TOKEN}","token_type":"bearer","expires_in":3600}}"#);
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).ok()?;
    Some(request)
}
