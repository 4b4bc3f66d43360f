//! TLS for tests: a throwaway certificate authority, and a proxy that
//! terminates TLS in front of a plaintext broker (tansu 0.6 takes `--cert`
//! and `--key` but still listens in plaintext).
//!
//! ```ignore
//! let pki = Pki::generate();
//! let listener = TlsListener::bind();
//! // Clients must come back through the proxy for every broker.
//! let broker = Tansu::start_behind(&listener.address());
//! let proxy = listener.forward_to(&broker.bootstrap(), &pki, ClientCertificate::Required);
//! kafka::produce_with(&proxy.address(), "t", None, records, &pki.client_settings());
//! ```

use std::fs;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::ssl::{Ssl, SslAcceptor, SslFiletype, SslMethod, SslVerifyMode};
use openssl::x509::extension::{
    BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName,
};
use openssl::x509::{X509Builder, X509NameBuilder, X509};
use tempfile::TempDir;
use tokio::runtime::Runtime;
use tokio_openssl::SslStream;

/// PEM files of a certificate authority that signed a server certificate
/// (for `127.0.0.1` and `localhost`) and a client certificate, and of a
/// second, unrelated authority. Deleted on drop.
pub(crate) struct Pki {
    dir: TempDir,
}

enum Role {
    Authority,
    Server,
    Client,
}

impl Pki {
    /// Generates the keys (P-256) and certificates, valid for a day.
    pub(crate) fn generate() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("sluice-pki-")
            .tempdir()
            .expect("creating a temp dir for the certificates");
        let write = |name: &str, pem: Vec<u8>| {
            fs::write(dir.path().join(name), pem).unwrap_or_else(|e| panic!("writing {name}: {e}"))
        };
        let ca_key = new_key();
        let ca = certificate("sluice test CA", &ca_key, None, Role::Authority);
        write("ca.pem", ca.to_pem().unwrap());
        for (name, role) in [("server", Role::Server), ("client", Role::Client)] {
            let key = new_key();
            let cert = certificate(
                &format!("sluice test {name}"),
                &key,
                Some((&ca, &ca_key)),
                role,
            );
            write(&format!("{name}.pem"), cert.to_pem().unwrap());
            write(
                &format!("{name}.key"),
                key.private_key_to_pem_pkcs8().unwrap(),
            );
        }
        let other_key = new_key();
        let other = certificate("another CA", &other_key, None, Role::Authority);
        write("other-ca.pem", other.to_pem().unwrap());
        Self { dir }
    }

    /// The authority that signed the server and client certificates.
    pub(crate) fn ca(&self) -> PathBuf {
        self.file("ca.pem")
    }

    /// An authority that signed nothing here.
    pub(crate) fn other_ca(&self) -> PathBuf {
        self.file("other-ca.pem")
    }

    /// The client certificate and its key.
    pub(crate) fn client_certificate(&self) -> (PathBuf, PathBuf) {
        (self.file("client.pem"), self.file("client.key"))
    }

    /// librdkafka settings for TLS with [`ca`](Self::ca) pinned and the
    /// client certificate presented.
    pub(crate) fn client_settings(&self) -> Vec<(String, String)> {
        let (cert, key) = self.client_certificate();
        [
            ("security.protocol", "ssl".to_owned()),
            ("ssl.ca.location", path_str(&self.ca())),
            ("ssl.certificate.location", path_str(&cert)),
            ("ssl.key.location", path_str(&key)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// `settings` as the `(&str, &str)` pairs `kafka::produce_with` takes.
pub(crate) fn as_pairs(settings: &[(String, String)]) -> Vec<(&str, &str)> {
    settings
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

fn path_str(path: &Path) -> String {
    path.to_str().expect("temp paths are UTF-8").to_owned()
}

fn new_key() -> PKey<Private> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
    PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap()
}

/// A certificate for `key`, signed by `issuer` or by itself.
fn certificate(
    common_name: &str,
    key: &PKey<Private>,
    issuer: Option<(&X509, &PKey<Private>)>,
    role: Role,
) -> X509 {
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_nid(Nid::COMMONNAME, common_name)
        .unwrap();
    let name = name.build();
    let mut serial = BigNum::new().unwrap();
    serial.rand(64, MsbOption::MAYBE_ZERO, false).unwrap();
    // An hour back, so that a clock a little behind still accepts it.
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;

    let mut builder = X509Builder::new().unwrap();
    builder.set_version(2).unwrap();
    builder
        .set_serial_number(&serial.to_asn1_integer().unwrap())
        .unwrap();
    builder.set_subject_name(&name).unwrap();
    builder
        .set_issuer_name(issuer.map_or(&*name, |(ca, _)| ca.subject_name()))
        .unwrap();
    builder.set_pubkey(key).unwrap();
    builder
        .set_not_before(&Asn1Time::from_unix(now - 3600).unwrap())
        .unwrap();
    builder
        .set_not_after(&Asn1Time::days_from_now(1).unwrap())
        .unwrap();
    match role {
        Role::Authority => {
            let constraints = BasicConstraints::new().critical().ca().build().unwrap();
            let usage = KeyUsage::new().critical().key_cert_sign().build().unwrap();
            builder.append_extension(constraints).unwrap();
            builder.append_extension(usage).unwrap();
        }
        Role::Server => {
            // librdkafka checks the broker's name (here an IP address).
            let names = SubjectAlternativeName::new()
                .ip("127.0.0.1")
                .dns("localhost")
                .build(&builder.x509v3_context(issuer.map(|(ca, _)| &**ca), None))
                .unwrap();
            let usage = ExtendedKeyUsage::new().server_auth().build().unwrap();
            builder.append_extension(names).unwrap();
            builder.append_extension(usage).unwrap();
        }
        Role::Client => {
            let usage = ExtendedKeyUsage::new().client_auth().build().unwrap();
            builder.append_extension(usage).unwrap();
        }
    }
    let signer = issuer.map_or(key, |(_, ca_key)| ca_key);
    builder.sign(signer, MessageDigest::sha256()).unwrap();
    builder.build()
}

/// Whether the proxy asks clients for a certificate signed by the CA.
#[derive(Clone, Copy, Debug)]
pub(crate) enum ClientCertificate {
    /// Mutual TLS: a client without one is refused.
    Required,
    /// Server authentication only.
    NotAsked,
}

/// A bound loopback port for a [`TlsProxy`], so that the broker behind it
/// can be told, before the proxy starts, to send clients there.
pub(crate) struct TlsListener {
    listener: TcpListener,
}

impl TlsListener {
    pub(crate) fn bind() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding a loopback port");
        Self { listener }
    }

    /// `host:port` for clients.
    pub(crate) fn address(&self) -> String {
        self.listener.local_addr().unwrap().to_string()
    }

    /// Starts serving: each connection's TLS handshake is completed with
    /// the server certificate of `pki`, then its bytes are forwarded both
    /// ways to a new plaintext connection to `upstream` (`host:port`).
    pub(crate) fn forward_to(
        self,
        upstream: &str,
        pki: &Pki,
        clients: ClientCertificate,
    ) -> TlsProxy {
        let mut acceptor = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server()).unwrap();
        acceptor
            .set_private_key_file(pki.file("server.key"), SslFiletype::PEM)
            .unwrap();
        acceptor
            .set_certificate_chain_file(pki.file("server.pem"))
            .unwrap();
        acceptor.check_private_key().unwrap();
        if let ClientCertificate::Required = clients {
            acceptor.set_ca_file(pki.ca()).unwrap();
            acceptor.set_verify(SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT);
        }
        let acceptor = Arc::new(acceptor.build());
        let upstream: SocketAddr = upstream
            .parse()
            .unwrap_or_else(|e| panic!("upstream {upstream}: {e}"));
        let address = self.address();
        let handshakes = Arc::<Handshakes>::default();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("tls-proxy")
            .enable_io()
            .build()
            .expect("starting the proxy's runtime");
        self.listener.set_nonblocking(true).unwrap();
        let listener = self.listener;
        let log = Arc::clone(&handshakes);
        runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(forward(
                    client,
                    Arc::clone(&acceptor),
                    upstream,
                    Arc::clone(&log),
                ));
            }
        });
        TlsProxy {
            address,
            handshakes,
            _runtime: runtime,
        }
    }
}

/// A TLS-terminating proxy; stops, dropping its connections, on drop.
pub(crate) struct TlsProxy {
    address: String,
    handshakes: Arc<Handshakes>,
    _runtime: Runtime,
}

impl TlsProxy {
    /// `host:port` for clients.
    pub(crate) fn address(&self) -> String {
        self.address.clone()
    }

    /// How many TLS handshakes succeeded so far.
    pub(crate) fn completed_handshakes(&self) -> usize {
        self.handshakes.state.lock().unwrap().completed
    }

    /// Waits until a handshake fails and returns why, as the server side
    /// saw it (e.g. the client's `unknown ca` alert). Fails the test after
    /// `timeout`.
    pub(crate) fn wait_for_refused_handshake(&self, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let mut state = self.handshakes.state.lock().unwrap();
        loop {
            if let Some(why) = state.refused.first() {
                return why.clone();
            }
            let now = Instant::now();
            assert!(
                now < deadline,
                "no TLS handshake failed within {timeout:?} ({} succeeded)",
                state.completed
            );
            state = self
                .handshakes
                .changed
                .wait_timeout(state, deadline - now)
                .unwrap()
                .0;
        }
    }
}

#[derive(Default)]
struct Handshakes {
    state: Mutex<HandshakeState>,
    changed: Condvar,
}

#[derive(Default)]
struct HandshakeState {
    completed: usize,
    refused: Vec<String>,
}

async fn forward(
    client: tokio::net::TcpStream,
    acceptor: Arc<SslAcceptor>,
    upstream: SocketAddr,
    handshakes: Arc<Handshakes>,
) {
    let ssl = Ssl::new(acceptor.context()).unwrap();
    let mut tls = SslStream::new(ssl, client).unwrap();
    let accepted = Pin::new(&mut tls).accept().await;
    {
        let mut state = handshakes.state.lock().unwrap();
        match &accepted {
            Ok(()) => state.completed += 1,
            Err(e) => state.refused.push(e.to_string()),
        }
        handshakes.changed.notify_all();
    }
    if accepted.is_err() {
        return;
    }
    // A broker gone is the client's to notice: the connection closes.
    if let Ok(mut broker) = tokio::net::TcpStream::connect(upstream).await {
        let _ = tokio::io::copy_bidirectional(&mut tls, &mut broker).await;
    }
}
