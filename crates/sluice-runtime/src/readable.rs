//! Durations as people read them in logs and the web UI.

use std::fmt;
use std::time::Duration;

/// Shows a duration with a precision that fits its size: `850µs`, `6.1ms`,
/// `66ms`, `1.24s`, `2m05s`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Readable(pub(crate) Duration);

impl fmt::Display for Readable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        let ms = d.as_secs_f64() * 1e3;
        if d < Duration::from_millis(1) {
            write!(f, "{}µs", d.as_micros())
        } else if d < Duration::from_millis(10) {
            write!(f, "{ms:.1}ms")
        } else if d < Duration::from_secs(1) {
            write!(f, "{ms:.0}ms")
        } else if d < Duration::from_secs(60) {
            write!(f, "{:.2}s", d.as_secs_f64())
        } else {
            let s = d.as_secs();
            write!(f, "{}m{:02}s", s / 60, s % 60)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precision_follows_the_size() {
        let shown = |d| Readable(d).to_string();
        assert_eq!(shown(Duration::from_micros(850)), "850µs");
        assert_eq!(shown(Duration::from_micros(6_140)), "6.1ms");
        assert_eq!(shown(Duration::from_micros(66_097)), "66ms");
        assert_eq!(shown(Duration::from_millis(1_236)), "1.24s");
        assert_eq!(shown(Duration::from_secs(125)), "2m05s");
    }
}
