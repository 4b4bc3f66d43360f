//! Security settings that librdkafka accepts one by one but that can never
//! connect: it reports some only when a client is created, at start, with
//! advice meant for its own builders or an OpenSSL code, and one never.

use std::collections::BTreeMap;

use rdkafka::config::NativeClientConfig;

use crate::{Error, Result};

/// What librdkafka implements, as `sasl.mechanism` spells it.
const MECHANISMS: &str = "PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER or GSSAPI";
const WITHOUT_GSSAPI: &str = "PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER";

/// Files a client reads when it is created. librdkafka reports a missing
/// one by an OpenSSL error code (`system lib`).
const FILES: [&str; 5] = [
    "ssl.ca.location",
    "ssl.certificate.location",
    "ssl.key.location",
    "ssl.keystore.location",
    "ssl.crl.location",
];

/// Checks the settings of the protocol `security.protocol` selects.
///
/// `config` gives librdkafka's view, defaults and aliases resolved;
/// `settings` says what the user wrote, to name it in the error.
pub(crate) fn check_security(
    config: &NativeClientConfig,
    settings: &BTreeMap<String, String>,
) -> Result<()> {
    let value = |key: &str| config.get(key).unwrap_or_default();
    // librdkafka reports the protocol in lower case, whatever was written.
    let protocol = value("security.protocol");
    if protocol.ends_with("ssl") {
        check_files(settings)?;
    }
    if protocol.starts_with("sasl_") {
        check_sasl(&value, settings)?;
    }
    Ok(())
}

/// Refuses a certificate, key or CA setting that names no readable file
/// or directory.
fn check_files(settings: &BTreeMap<String, String>) -> Result<()> {
    for key in FILES {
        let Some(path) = settings.get(key) else {
            continue;
        };
        // `probe`: librdkafka looks for the system's CA store itself.
        if key == "ssl.ca.location" && path == "probe" {
            continue;
        }
        if let Err(e) = std::fs::metadata(path) {
            return Err(Error::config(key, format!("cannot read '{path}': {e}")));
        }
    }
    Ok(())
}

/// Refuses a SASL mechanism that librdkafka does not know or this build
/// lacks, and an OAUTHBEARER setup without a source of tokens.
fn check_sasl(value: &impl Fn(&str) -> String, settings: &BTreeMap<String, String>) -> Result<()> {
    let given = ["sasl.mechanism", "sasl.mechanisms"]
        .into_iter()
        .find(|key| settings.contains_key(*key));
    let setting = given.unwrap_or("sasl.mechanism");
    match value("sasl.mechanisms").as_str() {
        "PLAIN" | "SCRAM-SHA-256" | "SCRAM-SHA-512" => Ok(()),
        "OAUTHBEARER" => check_token_source(value),
        "GSSAPI" if has_feature(&value("builtin.features"), "sasl_gssapi") => Ok(()),
        "GSSAPI" => Err(Error::config(
            setting,
            match given {
                Some(_) => format!(
                    "GSSAPI (Kerberos) needs sluice built with its `gssapi` cargo feature, \
                     which links libsasl2; without it, use {WITHOUT_GSSAPI}"
                ),
                None => format!(
                    "not set, so librdkafka would use GSSAPI (Kerberos), which needs sluice \
                     built with its `gssapi` cargo feature: set it to {WITHOUT_GSSAPI}, or \
                     build with the feature"
                ),
            },
        )),
        other => Err(Error::config(
            setting,
            format!(
                "'{other}' is not a SASL mechanism librdkafka knows: use {MECHANISMS} \
                 (upper case)"
            ),
        )),
    }
}

/// sluice's clients take tokens only from librdkafka itself: its OIDC
/// client, or unsigned tokens for tests. Anything else would leave every
/// connection waiting for a token that never comes.
fn check_token_source(value: &impl Fn(&str) -> String) -> Result<()> {
    if value("sasl.oauthbearer.method") == "oidc"
        || value("enable.sasl.oauthbearer.unsecure.jwt") == "true"
    {
        return Ok(());
    }
    Err(Error::config(
        "sasl.oauthbearer.method",
        "sluice gets OAUTHBEARER tokens from librdkafka's OIDC client: set it to `oidc`, with \
         `sasl.oauthbearer.token.endpoint.url`, `sasl.oauthbearer.client.id` and \
         `sasl.oauthbearer.client.secret` (or `enable.sasl.oauthbearer.unsecure.jwt=true`, \
         for test brokers only)",
    ))
}

/// Whether librdkafka's `builtin.features` (`gzip, snappy, ssl, …`) lists
/// `feature`.
fn has_feature(features: &str, feature: &str) -> bool {
    features.split(',').any(|f| f.trim() == feature)
}

#[cfg(test)]
mod tests {
    use crate::{Error, KafkaSource, KafkaSourceBuilder};

    fn sasl(mechanism: Option<&str>) -> KafkaSourceBuilder {
        let builder = KafkaSource::builder()
            .brokers("localhost:9093")
            .subscribe(["a"])
            .set("security.protocol", "SASL_SSL")
            .set("sasl.username", "user")
            .set("sasl.password", "secret");
        match mechanism {
            Some(mechanism) => builder.set("sasl.mechanism", mechanism),
            None => builder,
        }
    }

    fn config_err(builder: KafkaSourceBuilder) -> (String, String) {
        match builder.build() {
            Err(Error::Config { setting, reason }) => (setting, reason),
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn mechanisms_librdkafka_implements_are_accepted() {
        for mechanism in ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] {
            sasl(Some(mechanism))
                .build()
                .unwrap_or_else(|e| panic!("{mechanism}: {e}"));
        }
        sasl(Some("OAUTHBEARER"))
            .set("sasl.oauthbearer.method", "oidc")
            .build()
            .unwrap();
        sasl(Some("OAUTHBEARER"))
            .set("enable.sasl.oauthbearer.unsecure.jwt", "true")
            .build()
            .unwrap();
    }

    #[test]
    fn an_unknown_mechanism_is_refused_under_the_name_it_was_given() {
        let (setting, reason) = config_err(sasl(Some("plain")));
        assert_eq!(setting, "sasl.mechanism");
        assert!(
            reason.contains("'plain'") && reason.contains("SCRAM-SHA-512"),
            "{reason}"
        );
        let (setting, _) = config_err(sasl(None).set("sasl.mechanisms", "SCRAM-SHA-1"));
        assert_eq!(setting, "sasl.mechanisms");
    }

    #[test]
    fn only_the_settings_of_the_protocol_in_use_are_checked() {
        let plain = || {
            KafkaSource::builder()
                .brokers("localhost:9092")
                .subscribe(["a"])
        };
        plain()
            .set("security.protocol", "ssl")
            .set("sasl.mechanism", "bogus")
            .build()
            .unwrap();
        plain()
            .set("ssl.ca.location", "/no/such/dir/ca.pem")
            .build()
            .unwrap();
    }

    #[cfg(not(feature = "gssapi"))]
    #[test]
    fn gssapi_names_the_cargo_feature_it_needs() {
        let (setting, reason) = config_err(sasl(Some("GSSAPI")));
        assert_eq!(setting, "sasl.mechanism");
        assert!(reason.contains("`gssapi` cargo feature"), "{reason}");
        // librdkafka's default mechanism is GSSAPI.
        let (setting, reason) = config_err(sasl(None));
        assert_eq!(setting, "sasl.mechanism");
        assert!(reason.starts_with("not set"), "{reason}");
    }

    #[cfg(feature = "gssapi")]
    #[test]
    fn gssapi_is_accepted_with_its_cargo_feature() {
        sasl(Some("GSSAPI")).build().unwrap();
        sasl(None).build().unwrap();
    }

    #[test]
    fn oauthbearer_without_a_token_source_is_refused() {
        let (setting, reason) = config_err(sasl(Some("OAUTHBEARER")));
        assert_eq!(setting, "sasl.oauthbearer.method");
        assert!(reason.contains("`oidc`"), "{reason}");
    }

    #[test]
    fn a_missing_certificate_file_is_refused() {
        let (setting, reason) =
            config_err(sasl(Some("PLAIN")).set("ssl.ca.location", "/no/such/dir/ca.pem"));
        assert_eq!(setting, "ssl.ca.location");
        assert!(reason.contains("'/no/such/dir/ca.pem'"), "{reason}");
        sasl(Some("PLAIN"))
            .set("ssl.ca.location", "probe")
            .build()
            .unwrap();
    }

    #[test]
    fn a_bad_security_protocol_lists_the_good_ones() {
        let (setting, reason) = config_err(sasl(None).set("security.protocol", "bogus"));
        assert_eq!(setting, "security.protocol");
        assert!(
            reason.contains("\"bogus\"") && reason.contains("sasl_ssl"),
            "{reason}"
        );
    }
}
