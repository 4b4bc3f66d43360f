//! The examples' `--config FILE`: a TOML file of settings under the
//! command-line flags.

use std::process::{Command, Stdio};

use tempfile::TempDir;

use crate::util::job::{line, word_counts};
use crate::util::kafka;
use crate::util::wordcount::{binary, totals};

fn run_wordcount(args: &[&std::ffi::OsStr]) -> std::process::Output {
    Command::new(binary())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running the wordcount")
}

/// `word<TAB>count` lines of `counts`, as `--totals` prints them.
fn printed(counts: &std::collections::BTreeMap<String, i64>) -> String {
    counts.iter().map(|(w, n)| format!("{w}\t{n}\n")).collect()
}

/// Also pins that `[kafka]` takes numbers and booleans, not only strings.
#[test]
fn wordcount_takes_its_settings_from_a_config_file_and_flags_override_it() {
    let cluster = kafka::mock_cluster();
    let bootstrap = cluster.bootstrap_servers();
    kafka::create_mock_topic(&cluster, "configured", 2);
    let lines: Vec<String> = (0..200).map(line).collect();
    kafka::produce(&bootstrap, "configured", None, &lines);

    let dir = TempDir::new().unwrap();
    let from_file = dir.path().join("from-file");
    let from_flag = dir.path().join("from-flag");
    let config = dir.path().join("job.toml");
    std::fs::write(
        &config,
        format!(
            "brokers = \"{bootstrap}\"\ntopic = \"configured\"\ncheckpoint_dir = \"{}\"\n\
             batch_interval_ms = 50\n\n[kafka]\n\"fetch.wait.max.ms\" = 10\n\
             \"check.crcs\" = true\n",
            from_file.display()
        ),
    )
    .unwrap();

    let out = run_wordcount(&[
        "--config".as_ref(),
        config.as_os_str(),
        "--until-caught-up".as_ref(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(totals(&from_file), printed(&word_counts(&lines)));

    // A flag wins over the file.
    let out = run_wordcount(&[
        "--config".as_ref(),
        config.as_os_str(),
        "--checkpoint-dir".as_ref(),
        from_flag.as_os_str(),
        "--until-caught-up".as_ref(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(totals(&from_flag), printed(&word_counts(&lines)));
}

#[test]
fn a_config_file_with_an_unknown_setting_is_refused_naming_it() {
    let dir = TempDir::new().unwrap();
    let config = dir.path().join("job.toml");
    std::fs::write(&config, "topic = \"lines\"\nbatch_intervall_ms = 100\n").unwrap();
    let checkpoint = dir.path().join("checkpoint");
    let out = run_wordcount(&[
        "--config".as_ref(),
        config.as_os_str(),
        "--checkpoint-dir".as_ref(),
        checkpoint.as_os_str(),
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("job.toml"), "{stderr}");
    assert!(stderr.contains("batch_intervall_ms"), "{stderr}");
    assert!(!checkpoint.exists(), "nothing is written");
}
