//! What the examples print: log lines on stderr, coloured only on a
//! terminal, and results on stdout, where a reader that went away
//! (`clicks --totals | head`) ends the example quietly instead of making
//! `println!` panic.

use std::io::{IsTerminal as _, Write as _};

/// Prints a line to stdout; a closed pipe ends the program with status 0
/// (what was printed was committed before), another write error with 1.
/// For the module that declares `mod output`.
macro_rules! out {
    ($($arg:tt)*) => {
        output::emit(format_args!($($arg)*))
    };
}

/// Sends sluice's `tracing` events to stderr, filtered by `RUST_LOG` or
/// else `default_filter`, with colours only when stderr is a terminal (not
/// in a file or a pipe).
pub(crate) fn init_logging(default_filter: &str) {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| default_filter.into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// Ends the example with status 1 after printing `error` on stderr as
/// `name: message: cause: ...`, leaving out a cause whose text the line
/// already holds (sluice's messages often include their cause's).
pub(crate) fn fail(name: &str, error: &anyhow::Error) -> ! {
    eprintln!("{name}: {}", report(error));
    std::process::exit(1);
}

/// `error` and its causes on one line, each cause once.
fn report(error: &anyhow::Error) -> String {
    let mut line = error.to_string();
    for cause in error.chain().skip(1) {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
    }
    line
}

/// Writes `line` and a newline to stdout; see [`out!`].
pub(crate) fn emit(line: std::fmt::Arguments<'_>) {
    write(|stdout| {
        stdout.write_fmt(line)?;
        stdout.write_all(b"\n")
    });
}

/// Writes `text` to stdout as it is; a closed pipe ends the program as in
/// [`out!`].
// Not every example including this file calls it.
#[allow(dead_code)]
pub(crate) fn print_text(text: &str) {
    write(|stdout| stdout.write_all(text.as_bytes()));
}

fn write(what: impl FnOnce(&mut std::io::StdoutLock<'static>) -> std::io::Result<()>) {
    let mut stdout = std::io::stdout().lock();
    let written = what(&mut stdout).and_then(|()| stdout.flush());
    if let Err(error) = written {
        if error.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("cannot write the output: {error}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_whose_message_holds_its_cause_prints_the_cause_once() {
        let error = anyhow::anyhow!("EndTxn not supported")
            .context("committing the transaction failed: EndTxn not supported")
            .context("batch 0 failed");
        assert_eq!(
            report(&error),
            "batch 0 failed: committing the transaction failed: EndTxn not supported"
        );
    }
}
