//! What the Kafka client must speak to reach and read production clusters:
//! the four compression codecs, TLS (with a pinned CA and client
//! certificates), and SASL PLAIN, SCRAM and OAUTHBEARER through OIDC.
//!
//! Codecs run against librdkafka's mock broker, which keeps record batches
//! as the producer compressed them. TLS runs against the tansu broker
//! behind a TLS-terminating proxy (`util::tls`): tansu 0.6 accepts
//! `--cert`/`--key` but still listens in plaintext.

use std::time::{Duration, Instant};

use sluice::kafka::{Error as KafkaError, KafkaSourceBuilder};
use sluice::prelude::*;

use crate::util::job::{self, WAIT};
use crate::util::kafka;
use crate::util::logged_by;
use crate::util::oidc::TokenEndpoint;
use crate::util::tansu::Tansu;
use crate::util::tls::{self, ClientCertificate, Pki, TlsListener};

/// Records per codec: enough for many multi-record (compressed) batches.
const RECORDS: usize = 3000;

/// Nobody listens there: clients that do connect fail at once.
const NOWHERE: &str = "127.0.0.1:9";

/// Produces [`RECORDS`] repetitive values compressed with `codec`, runs a
/// job that counts them, and checks that the committed counts are exactly
/// the values produced.
fn assert_compressed_records_are_read_exactly(codec: &str) {
    let cluster = kafka::mock_cluster();
    let bootstrap = cluster.bootstrap_servers();
    let topic = format!("{codec}-events");
    kafka::create_mock_topic(&cluster, &topic, 2);
    let values: Vec<String> = (0..RECORDS)
        .map(|i| format!("{codec} event {}", i % 41))
        .collect();
    kafka::produce_with(
        &bootstrap,
        &topic,
        None,
        values.iter().map(|v| (None::<&str>, Some(v))),
        &[("compression.type", codec), ("linger.ms", "20")],
    );

    let dir = tempfile::tempdir().unwrap();
    let source = job::source(&bootstrap)
        .subscribe([topic.as_str()])
        .build()
        .unwrap();
    let mut running = job::count_values(job::context(dir.path()).build().unwrap(), source);
    running.wait_for_records(RECORDS as u64, &format!("the {codec}-compressed records"));
    running.stop();
    assert_eq!(
        job::committed_counts(dir.path()),
        job::counts_of(&values),
        "{codec}-compressed records were not counted exactly once"
    );
}

#[test]
fn gzip_compressed_records_are_read_exactly() {
    assert_compressed_records_are_read_exactly("gzip");
}

#[test]
fn snappy_compressed_records_are_read_exactly() {
    assert_compressed_records_are_read_exactly("snappy");
}

#[test]
fn lz4_compressed_records_are_read_exactly() {
    assert_compressed_records_are_read_exactly("lz4");
}

#[test]
fn zstd_compressed_records_are_read_exactly() {
    assert_compressed_records_are_read_exactly("zstd");
}

/// A source of `settings`, aimed at `brokers`, with a group id as the
/// runtime would give it.
fn secured_source(
    brokers: &str,
    settings: &[(String, String)],
    customize: impl FnOnce(KafkaSourceBuilder) -> KafkaSourceBuilder,
) -> Result<KafkaSource, KafkaError> {
    let mut builder = job::source(brokers).subscribe(["secured"]);
    for (key, value) in settings {
        builder = builder.set(key, value);
    }
    Ok(customize(builder)
        .build()?
        .with_default_group_id("client-features"))
}

fn owned(settings: &[(&str, &str)]) -> Vec<(String, String)> {
    settings
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn every_security_protocol_and_sasl_mechanism_creates_its_clients() {
    let pki = Pki::generate();
    let ca = pki.ca().display().to_string();
    let (cert, key) = pki.client_certificate();
    let (cert, key) = (cert.display().to_string(), key.display().to_string());
    let tokens = TokenEndpoint::start();
    let token_url = tokens.url();
    let sasl = |protocol: &str, mechanism: &str| {
        let mut settings = owned(&[
            ("security.protocol", protocol),
            ("sasl.mechanism", mechanism),
            ("sasl.username", "sluice"),
            ("sasl.password", "secret"),
        ]);
        if protocol == "SASL_SSL" {
            settings.extend(owned(&[("ssl.ca.location", &ca)]));
        }
        settings
    };
    let mut cases = vec![
        (
            "TLS, CA pinned",
            owned(&[("security.protocol", "SSL"), ("ssl.ca.location", &ca)]),
        ),
        (
            "mutual TLS",
            owned(&[
                ("security.protocol", "SSL"),
                ("ssl.ca.location", &ca),
                ("ssl.certificate.location", &cert),
                ("ssl.key.location", &key),
            ]),
        ),
        ("SASL PLAIN", sasl("SASL_PLAINTEXT", "PLAIN")),
        ("SASL PLAIN over TLS", sasl("SASL_SSL", "PLAIN")),
        ("SCRAM-SHA-256", sasl("SASL_SSL", "SCRAM-SHA-256")),
        ("SCRAM-SHA-512", sasl("SASL_SSL", "SCRAM-SHA-512")),
        (
            "OAUTHBEARER through OIDC",
            owned(&[
                ("security.protocol", "SASL_SSL"),
                ("ssl.ca.location", &ca),
                ("sasl.mechanism", "OAUTHBEARER"),
                ("sasl.oauthbearer.method", "oidc"),
                ("sasl.oauthbearer.client.id", "sluice"),
                ("sasl.oauthbearer.client.secret", "secret"),
                ("sasl.oauthbearer.scope", "kafka"),
                ("sasl.oauthbearer.token.endpoint.url", &token_url),
            ]),
        ),
    ];
    if cfg!(feature = "gssapi") {
        let mut gssapi = sasl("SASL_PLAINTEXT", "GSSAPI");
        // No ticket is needed to create a client.
        gssapi.extend(owned(&[("sasl.kerberos.kinit.cmd", "true")]));
        cases.push(("GSSAPI", gssapi));
    }
    for (case, settings) in &cases {
        let source = secured_source(NOWHERE, settings, |b| b)
            .unwrap_or_else(|e| panic!("{case}: build() failed: {e}"));
        let client = source
            .connect()
            .unwrap_or_else(|e| panic!("{case}: connect() failed: {e}"));
        drop(client);
    }
}

#[test]
fn oauthbearer_clients_fetch_their_token_from_the_oidc_endpoint() {
    let tokens = TokenEndpoint::start();
    let settings = owned(&[
        ("security.protocol", "SASL_PLAINTEXT"),
        ("sasl.mechanism", "OAUTHBEARER"),
        ("sasl.oauthbearer.method", "oidc"),
        ("sasl.oauthbearer.client.id", "sluice-job"),
        ("sasl.oauthbearer.client.secret", "secret"),
        ("sasl.oauthbearer.token.endpoint.url", &tokens.url()),
    ]);
    let client = secured_source(NOWHERE, &settings, |b| b)
        .unwrap()
        .connect()
        .unwrap();
    let request = tokens.wait_for_request(WAIT);
    drop(client);
    assert!(request.starts_with("POST /token "), "{request}");
    assert!(
        request.contains("grant_type=client_credentials"),
        "{request}"
    );
    // `sluice-job:secret`, as HTTP Basic credentials.
    assert!(
        request.contains("Basic c2x1aWNlLWpvYjpzZWNyZXQ="),
        "{request}"
    );
}

#[test]
fn bad_security_settings_fail_before_reading_and_name_the_setting() {
    let missing = std::env::temp_dir().join("sluice-no-such-ca.pem");
    let missing = missing.display().to_string();
    // At build(): librdkafka refuses the value, or sluice knows it cannot
    // connect.
    for (settings, setting) in [
        (vec![("security.protocol", "bogus")], "security.protocol"),
        (
            vec![("security.protocol", "SSL"), ("ssl.ca.location", &*missing)],
            "ssl.ca.location",
        ),
        (
            vec![
                ("security.protocol", "SASL_SSL"),
                ("sasl.mechanism", "SCRAM"),
            ],
            "sasl.mechanism",
        ),
        (
            vec![
                ("security.protocol", "SASL_SSL"),
                ("sasl.mechanism", "OAUTHBEARER"),
            ],
            "sasl.oauthbearer.method",
        ),
    ] {
        match secured_source(NOWHERE, &owned(&settings), |b| b) {
            Err(KafkaError::Config {
                setting: named,
                reason,
            }) => {
                assert_eq!(named, setting, "{settings:?}: {reason}")
            }
            other => panic!("{settings:?}: expected a config error, got {other:?}"),
        }
    }
    // At connect(), when the clients are created: librdkafka's own
    // checks, which name the setting.
    for (settings, setting) in [
        (
            vec![
                ("security.protocol", "SASL_SSL"),
                ("sasl.mechanism", "PLAIN"),
            ],
            "sasl.username",
        ),
        (
            vec![
                ("security.protocol", "SASL_SSL"),
                ("sasl.mechanism", "OAUTHBEARER"),
                ("sasl.oauthbearer.method", "oidc"),
                (
                    "sasl.oauthbearer.token.endpoint.url",
                    "http://127.0.0.1:9/token",
                ),
            ],
            "sasl.oauthbearer.client.id",
        ),
    ] {
        let source = secured_source(NOWHERE, &owned(&settings), |b| b)
            .unwrap_or_else(|e| panic!("{settings:?}: build() failed: {e}"));
        match source.connect() {
            Err(e) => assert!(
                e.to_string().contains(setting),
                "{settings:?}: the error does not name {setting}: {e}"
            ),
            Ok(_) => panic!("{settings:?}: connect() succeeded"),
        }
    }
}

#[test]
fn a_job_reads_over_mutual_tls_with_the_ca_pinned() {
    let pki = Pki::generate();
    let listener = TlsListener::bind();
    // Every broker address the client learns is the proxy's.
    let broker = Tansu::start_behind(&listener.address());
    // Forwarding before the topic is created: the plaintext client that
    // waits for the topic is refused at once by the proxy's address, which
    // tansu advertises, and asks the bootstrap connection instead of waiting
    // on a listener that never answers.
    let proxy = listener.forward_to(&broker.bootstrap(), &pki, ClientCertificate::Required);
    broker.create_topic("secured", 2);
    let settings = pki.client_settings();
    let values: Vec<String> = (0..500).map(|i| format!("secured-{i}")).collect();
    kafka::produce_with(
        &proxy.address(),
        "secured",
        None,
        values.iter().map(|v| (None::<&str>, Some(v))),
        &tls::as_pairs(&settings),
    );

    let by_producer = proxy.completed_handshakes();

    let dir = tempfile::tempdir().unwrap();
    let source = secured_source(&proxy.address(), &settings, |b| b).unwrap();
    let mut running = job::count_values(job::context(dir.path()).build().unwrap(), source);
    running.wait_for_records(500, "the 500 records, read over TLS");
    running.stop();
    assert_eq!(job::committed_counts(dir.path()), job::counts_of(&values));
    // The proxy is the only way to the broker, and speaks only TLS.
    assert!(
        proxy.completed_handshakes() > by_producer,
        "the job made no TLS connection"
    );
}

/// Connects a client with `settings` to a TLS proxy that forwards nowhere
/// and asks for metadata, which must fail. Returns what sluice logged
/// meanwhile and why the proxy saw the handshake fail.
fn refused_handshake(
    pki: &Pki,
    clients: ClientCertificate,
    settings: &[(String, String)],
) -> (String, String) {
    let proxy = TlsListener::bind().forward_to(NOWHERE, pki, clients);
    let mut client = secured_source(&proxy.address(), settings, |b| {
        b.metadata_timeout(Duration::from_secs(2))
    })
    .unwrap()
    .connect()
    .unwrap();
    let why = proxy.wait_for_refused_handshake(WAIT);
    let ((), logs) = logged_by(|| {
        client
            .partitions(Instant::now())
            .expect_err("metadata arrived through a refused TLS handshake");
        // The client's events, its errors among them, are served when it
        // is asked again.
        let _ = client.partitions(Instant::now());
    });
    (logs, why)
}

#[test]
fn a_broker_certificate_signed_by_another_ca_is_refused() {
    let pki = Pki::generate();
    let other_ca = pki.other_ca().display().to_string();
    let settings = owned(&[("security.protocol", "SSL"), ("ssl.ca.location", &other_ca)]);
    let (logs, why) = refused_handshake(&pki, ClientCertificate::NotAsked, &settings);
    // The client refused the broker's certificate ...
    assert!(why.contains("unknown ca"), "the proxy saw: {why}");
    // ... and the job's log says why, and what to check.
    assert!(
        logs.contains("ERROR")
            && logs.contains("certificate verify failed")
            && logs.contains("ssl.ca.location"),
        "sluice logged:\n{logs}"
    );
}

#[test]
fn a_client_without_its_certificate_is_refused_by_mutual_tls() {
    let pki = Pki::generate();
    let ca = pki.ca().display().to_string();
    let settings = owned(&[("security.protocol", "SSL"), ("ssl.ca.location", &ca)]);
    let (logs, why) = refused_handshake(&pki, ClientCertificate::Required, &settings);
    assert!(
        why.contains("peer did not return a certificate"),
        "the proxy saw: {why}"
    );
    assert!(
        logs.contains("ERROR") && logs.contains("certificate required"),
        "sluice logged:\n{logs}"
    );
}
