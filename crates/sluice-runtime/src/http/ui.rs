//! The web UI: server-rendered HTML with hand-written SVG charts, in the
//! spirit of Spark's Streaming tab. No JavaScript, nothing fetched from
//! elsewhere: the page works wherever the job's port is reachable.

use std::fmt::Write as _;
use std::time::Duration;

use super::monitor::{BatchView, Monitor, PartitionView, Snapshot};
use crate::readable::Readable;

/// Batches drawn in the timelines and listed in the table.
const CHART_BATCHES: usize = 200;
const TABLE_BATCHES: usize = 100;

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}\
h1{font-size:1.4em}h2{font-size:1.1em;margin-top:1.6em}\
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}\
th{background:#f2f2f2}td.l,th.l{text-align:left}.chart{display:flex;gap:1em;align-items:flex-start}\
svg{background:#fafafa;border:1px solid #ddd}form{display:inline-block;margin-right:1em}\
.paused{color:#b45309}.failed{color:#b91c1c}.running{color:#15803d}";

pub(crate) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{}</title>\
         <style>{STYLE}</style></head><body>{body}</body></html>",
        escape(title)
    )
}

fn secs(s: f64) -> String {
    Readable(Duration::try_from_secs_f64(s).unwrap_or_default()).to_string()
}

/// A rate that may not be known: `–`.
fn per_second(r: Option<f64>) -> String {
    r.map_or_else(|| "–".to_owned(), |r| format!("{r:.0}/s"))
}

/// A duration that may not be known: `–`.
fn maybe_secs(s: Option<f64>) -> String {
    s.map_or_else(|| "–".to_owned(), secs)
}

fn rate(r: Option<f64>) -> String {
    r.map_or_else(|| "none".to_owned(), |r| format!("{r:.0}/s"))
}

fn time(ms: i64) -> String {
    // UTC wall-clock time of day; the JSON API has the epoch milliseconds.
    let s = ms.div_euclid(1000);
    let (h, m, sec) = ((s / 3600) % 24, (s / 60) % 60, s % 60);
    format!("{h:02}:{m:02}:{sec:02}.{:03}", ms.rem_euclid(1000))
}

/// The overview page.
pub(crate) fn overview(monitor: &Monitor) -> String {
    let limits = monitor.control.limits();
    let uptime = monitor.uptime();
    let paused = monitor.control.is_paused();
    monitor.read(|s| {
        let mut b = String::new();
        let status = s.status.label();
        let limits_text = if monitor.history {
            "– (a checkpoint does not hold the job's settings; each batch's limit is in the \
             table below)"
                .to_owned()
        } else {
            format!(
                "max_rate {} · max_rate_per_partition {} · min_rate_per_partition {} · \
                 backpressure {}{} · initial_rate {}",
                rate(limits.max_rate),
                rate(limits.max_rate_per_partition),
                rate(Some(limits.min_rate_per_partition)),
                if limits.backpressure { "on" } else { "off" },
                s.estimate
                    .filter(|_| limits.backpressure)
                    .map_or_else(String::new, |e| format!(" (estimate {e:.0}/s)")),
                rate(limits.initial_rate),
            )
        };
        let _ = write!(
            b,
            "<h1>sluice · {}</h1><table id=\"overview\">\
             <tr><th class=l>status</th><td class=l><span id=status class={status}>{status}</span>{}</td></tr>\
             <tr><th class=l>uptime</th><td class=l>{}</td></tr>\
             <tr><th class=l>batch interval</th><td class=l>{}</td></tr>\
             <tr><th class=l>batches committed</th><td class=l>{}</td></tr>\
             <tr><th class=l>records read</th><td class=l>{}</td></tr>\
             <tr><th class=l>rate limits</th><td class=l>{}</td></tr></table>",
            escape(&s.app_id),
            match &s.status {
                super::monitor::Status::Failed(e) => format!(": {}", escape(e)),
                super::monitor::Status::Checkpoint if paused => {
                    " (read from the checkpoint: a job may or may not be running on it; it keeps \
                     the job paused until a resume)"
                        .to_owned()
                }
                super::monitor::Status::Checkpoint => {
                    " (read from the checkpoint: a job may or may not be running on it)".to_owned()
                }
                _ => String::new(),
            },
            if monitor.history {
                "– (read from a checkpoint)".to_owned()
            } else {
                Readable(Duration::from_secs(uptime.as_secs())).to_string()
            },
            Readable(s.batch_interval),
            s.batches_committed,
            s.records_read.map_or_else(
                || "– (the history no longer holds the first batches)".to_owned(),
                |n| n.to_string()
            ),
            escape(&limits_text),
        );
        if monitor.history {
            // The forms would only be answered 409: no job runs.
            b.push_str(
                "<h2>Control</h2><p id=no-control>Nothing to control: this is a stopped job's \
                 checkpoint. Pause and rate limits are changed on a running job's endpoint.</p>",
            );
        } else {
            control_forms(&mut b, paused, s.token_required, &limits);
        }
        timelines(&mut b, s);
        batch_table(&mut b, s);
        partition_table(&mut b, &s.partitions);
        b.push_str(
            "<p>JSON: <a href=\"/api/overview\">/api/overview</a> · <a href=\"/api/batches\">/api/batches</a> · \
             <a href=\"/api/partitions\">/api/partitions</a> · ",
        );
        b.push_str(if monitor.history {
            "metrics: only from a running job's endpoint</p>"
        } else {
            "metrics: <a href=\"/metrics\">/metrics</a></p>"
        });
        page(&format!("sluice · {}", s.app_id), &b)
    })
}

fn control_forms(b: &mut String, paused: bool, token: bool, limits: &sluice_core::RateLimits) {
    let token_field = if token {
        "<input name=token type=password placeholder=\"access token\" required> "
    } else {
        ""
    };
    let (action, label) = if paused {
        ("resume", "Resume intake")
    } else {
        ("pause", "Pause intake")
    };
    let value = |r: Option<f64>| r.map_or_else(String::new, |r| r.to_string());
    let _ = write!(
        b,
        "<h2>Control</h2><form id=pause-form method=post action=\"/control/{action}\">{token_field}\
         <button>{label}</button></form>\
         <form id=rate-form method=post action=\"/control/rate\">{token_field}\
         max_rate <input name=max_rate size=8 value=\"{}\"> \
         max_rate_per_partition <input name=max_rate_per_partition size=8 value=\"{}\"> \
         backpressure <select name=backpressure><option value=on{}>on</option><option value=off{}>off</option></select> \
         <button>Change rate limits</button></form>\
         <p><small>An empty rate removes the limit. Changes apply from the next batch and are \
         recorded in its batch record.</small></p>",
        value(limits.max_rate),
        value(limits.max_rate_per_partition),
        if limits.backpressure { " selected" } else { "" },
        if limits.backpressure { "" } else { " selected" },
    );
}

/// The series of the timelines: name, label, value of a batch, unit.
type Series = (&'static str, &'static str, fn(&BatchView) -> f64, bool);
const SERIES: [Series; 5] = [
    (
        "input-rate",
        "Input rate (records/s since the batch before)",
        // 0 for the first batch of a run, which has no batch before it.
        |v| v.input_rate.unwrap_or(0.0),
        false,
    ),
    (
        "processing",
        "Processing time",
        |v| v.processing_seconds,
        true,
    ),
    (
        "scheduling-delay",
        "Scheduling delay",
        |v| v.scheduling_delay_seconds,
        true,
    ),
    (
        "total-delay",
        "Total delay",
        |v| v.total_delay_seconds,
        true,
    ),
    (
        "max-latency",
        "Max end-to-end latency (0 without timestamped records)",
        |v| v.max_latency_seconds.unwrap_or(0.0),
        true,
    ),
];

fn timelines(b: &mut String, s: &Snapshot) {
    let skip = s.batches.len().saturating_sub(CHART_BATCHES);
    let batches: Vec<&BatchView> = s.batches.iter().skip(skip).collect();
    let _ = write!(
        b,
        "<h2>Timelines (last {} batches) and distributions</h2>",
        batches.len()
    );
    for (name, label, value, seconds) in SERIES {
        let points: Vec<(u64, f64)> = batches.iter().map(|v| (v.record.id, value(v))).collect();
        let show = |x: f64| if seconds { secs(x) } else { format!("{x:.0}") };
        let mean = if points.is_empty() {
            0.0
        } else {
            points.iter().map(|p| p.1).sum::<f64>() / points.len() as f64
        };
        let _ = write!(
            b,
            "<h3>{label} <small>avg {}</small></h3><div class=chart>",
            show(mean)
        );
        timeline_svg(b, name, &points, &show);
        histogram_svg(b, name, &points, &show);
        b.push_str("</div>");
    }
}

const W: f64 = 640.0;
const H: f64 = 140.0;
const PAD: f64 = 30.0;

fn timeline_svg(b: &mut String, name: &str, points: &[(u64, f64)], show: &dyn Fn(f64) -> String) {
    let max = points.iter().map(|p| p.1).fold(0.0, f64::max).max(1e-9);
    let n = points.len().max(2) as f64 - 1.0;
    let x = |i: usize| PAD + (W - 2.0 * PAD) * i as f64 / n;
    let y = |v: f64| H - PAD + (2.0 * PAD - H) * v / max;
    let _ = write!(
        b,
        "<svg class=timeline data-metric=\"{name}\" width={W} height={H} viewBox=\"0 0 {W} {H}\" \
         xmlns=\"http://www.w3.org/2000/svg\"><line x1={PAD} y1={} x2={} y2={} stroke=#999 />\
         <text x=2 y={} font-size=10>{}</text><text x=2 y={} font-size=10>0</text>",
        H - PAD,
        W - PAD,
        H - PAD,
        PAD - 4.0,
        escape(&show(max)),
        H - PAD,
    );
    if let (Some(first), Some(last)) = (points.first(), points.last()) {
        let _ = write!(
            b,
            "<text x={PAD} y={} font-size=10>batch {}</text><text x={} y={} font-size=10 text-anchor=end>batch {}</text>",
            H - 8.0,
            first.0,
            W - PAD,
            H - 8.0,
            last.0
        );
    }
    b.push_str("<polyline fill=none stroke=#2563eb stroke-width=1.5 points=\"");
    for (i, p) in points.iter().enumerate() {
        let _ = write!(b, "{:.1},{:.1} ", x(i), y(p.1));
    }
    b.push_str("\"/>");
    for (i, p) in points.iter().enumerate() {
        let _ = write!(
            b,
            "<a href=\"/batches/{id}\"><circle data-batch=\"{id}\" cx={:.1} cy={:.1} r=2.5 fill=#2563eb>\
             <title>batch {id}: {}</title></circle></a>",
            x(i),
            y(p.1),
            escape(&show(p.1)),
            id = p.0
        );
    }
    b.push_str("</svg>");
}

fn histogram_svg(b: &mut String, name: &str, points: &[(u64, f64)], show: &dyn Fn(f64) -> String) {
    const BINS: usize = 16;
    const HW: f64 = 260.0;
    let max = points.iter().map(|p| p.1).fold(0.0, f64::max).max(1e-9);
    let mut counts = [0usize; BINS];
    for p in points {
        let bin = ((p.1 / max) * BINS as f64) as usize;
        counts[bin.min(BINS - 1)] += 1;
    }
    let top = counts.iter().copied().max().unwrap_or(0).max(1) as f64;
    let width = (HW - 2.0 * 10.0) / BINS as f64;
    let _ = write!(
        b,
        "<svg class=histogram data-metric=\"{name}\" width={HW} height={H} viewBox=\"0 0 {HW} {H}\" \
         xmlns=\"http://www.w3.org/2000/svg\"><text x=10 y={} font-size=10>0</text>\
         <text x={} y={} font-size=10 text-anchor=end>{}</text>",
        H - 8.0,
        HW - 10.0,
        H - 8.0,
        escape(&show(max))
    );
    for (i, &count) in counts.iter().enumerate() {
        let h = (H - PAD - 10.0) * count as f64 / top;
        let _ = write!(
            b,
            "<rect x={:.1} y={:.1} width={:.1} height={:.1} fill=#93c5fd><title>{count} batches up to {}</title></rect>",
            10.0 + width * i as f64,
            H - PAD - h,
            width - 1.0,
            h,
            escape(&show(max * (i + 1) as f64 / BINS as f64)),
        );
    }
    b.push_str("</svg>");
}

fn batch_table(b: &mut String, s: &Snapshot) {
    let _ = write!(
        b,
        "<h2>Batches (newest {} of {} retained)</h2><table id=batches><tr><th>batch</th><th>time (UTC)</th>\
         <th>records</th><th>input rate</th><th>processing rate</th><th>scheduling delay</th><th>processing</th><th>total delay</th>\
         <th>commit</th><th class=l>rate limit</th><th>dead letters</th><th>late</th>\
         <th title=\"from the oldest record's Kafka timestamp to the commit (sluice ui: to the end of processing)\">max latency</th></tr>",
        s.batches.len().min(TABLE_BATCHES),
        s.batches.len()
    );
    for v in s.batches.iter().rev().take(TABLE_BATCHES) {
        let r = &v.record;
        let _ = write!(
            b,
            "<tr data-batch=\"{id}\"><td><a href=\"/batches/{id}\">{id}</a></td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{:.0}/s</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=l>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            time(r.time_ms),
            r.records,
            per_second(v.input_rate),
            v.processing_rate,
            secs(v.scheduling_delay_seconds),
            secs(v.processing_seconds),
            secs(v.total_delay_seconds),
            maybe_secs(v.commit_seconds),
            escape(r.rate_limit.as_deref().unwrap_or("none")),
            r.dead_letters,
            r.late_records.iter().map(|l| l.count).sum::<u64>(),
            maybe_secs(v.max_latency_seconds),
            id = r.id,
        );
    }
    b.push_str("</table>");
}

fn partition_table(b: &mut String, partitions: &[PartitionView]) {
    b.push_str(
        "<h2>Partitions</h2><table id=partitions><tr><th class=l>topic</th><th>partition</th>\
         <th>log start</th><th>latest</th><th>next position</th><th>lag (records)</th></tr>",
    );
    // Unknown (no broker was asked) is shown as such, never as a number.
    let known = |v: Option<i64>| {
        v.map_or_else(
            || "<td class=unknown title=\"unknown: no broker was asked\">–</td>".to_owned(),
            |v| format!("<td>{v}</td>"),
        )
    };
    for p in partitions {
        let _ = write!(
            b,
            "<tr><td class=l>{}</td><td>{}</td>{}{}<td>{}</td>{}</tr>",
            escape(&p.topic),
            p.partition,
            known(p.log_start),
            known(p.latest),
            p.position,
            known(p.lag)
        );
    }
    b.push_str("</table>");
    if partitions
        .iter()
        .any(|p| p.log_start.is_none() || p.latest.is_none() || p.lag.is_none())
    {
        b.push_str(
            "<p id=partitions-unknown><small>– unknown: this is a stopped job's checkpoint and no \
             broker was asked, so log start, latest offset and lag are not known (<code>sluice lag \
             DIR --brokers HOST:PORT</code> asks one).</small></p>",
        );
    }
}

/// The drill-down page of one batch; `None` when it is not retained.
pub(crate) fn batch(monitor: &Monitor, id: u64) -> Option<String> {
    monitor.read(|s| {
        let v = s.batches.iter().find(|v| v.record.id == id)?;
        let r = &v.record;
        let mut b = String::new();
        let _ = write!(
            b,
            "<p><a href=\"/\">← {}</a></p><h1>Batch {id}</h1><table id=batch>\
             <tr><th class=l>batch time (UTC)</th><td class=l>{} ({} ms since the epoch)</td></tr>\
             <tr><th class=l>records</th><td class=l>{}</td></tr>\
             <tr><th class=l title=\"records taken from the input, once per read: more than the records when outputs read chunks again\">records fetched</th><td class=l id=fetched>{}</td></tr>\
             <tr><th class=l>input rate</th><td class=l>{} since the batch before</td></tr>\
             <tr><th class=l>processing rate</th><td class=l>{:.0}/s of processing</td></tr>\
             <tr><th class=l>scheduling delay</th><td class=l>{}</td></tr>\
             <tr><th class=l>processing</th><td class=l>{}</td></tr>\
             <tr><th class=l>total delay</th><td class=l>{}</td></tr>\
             <tr><th class=l>checkpoint commit</th><td class=l>{}</td></tr>\
             <tr><th class=l>record timestamps</th><td class=l>{}</td></tr>\
             <tr><th class=l>max end-to-end latency</th><td class=l>{}</td></tr>\
             <tr><th class=l>rate limit</th><td class=l>{}</td></tr>\
             <tr><th class=l>dead letters</th><td class=l>{}</td></tr>\
             <tr><th class=l>control changes</th><td class=l>{}</td></tr></table>",
            escape(&s.app_id),
            time(r.time_ms),
            r.time_ms,
            r.records,
            r.records_fetched
                .map_or_else(|| "not recorded".to_owned(), |n| n.to_string()),
            per_second(v.input_rate),
            v.processing_rate,
            secs(v.scheduling_delay_seconds),
            secs(v.processing_seconds),
            secs(v.total_delay_seconds),
            maybe_secs(v.commit_seconds),
            match (r.min_timestamp_ms, r.max_timestamp_ms) {
                (Some(min), Some(max)) => format!(
                    "{} to {} UTC ({min} to {max} ms since the epoch)",
                    time(min),
                    time(max)
                ),
                _ => "none".to_owned(),
            },
            maybe_secs(v.max_latency_seconds),
            escape(r.rate_limit.as_deref().unwrap_or("none")),
            r.dead_letters,
            if r.control.is_empty() {
                "none".to_owned()
            } else {
                r.control
                    .iter()
                    .map(|c| format!("{} at {}", escape(&c.change), time(c.time_ms)))
                    .collect::<Vec<_>>()
                    .join("; ")
            },
        );
        b.push_str(
            "<h2>Offset ranges</h2><table id=ranges><tr><th class=l>topic</th><th>partition</th><th>from</th>\
             <th>until</th><th>records</th><th>skipped offsets</th><th class=l>reset</th></tr>",
        );
        for range in &r.ranges {
            let _ = write!(
                b,
                "<tr class=range><td class=l>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=l>{}</td></tr>",
                escape(&range.topic),
                range.partition,
                range.from,
                range.until,
                range.records,
                range.skipped_offsets,
                range.reset.map_or_else(
                    || "—".to_owned(),
                    |reset| format!("{:?} from stored offset {}", reset.kind, reset.stored)
                ),
            );
        }
        b.push_str("</table>");
        if !r.late_records.is_empty() {
            b.push_str("<h2>Late records</h2><table id=late><tr><th class=l>window</th><th class=l>topic</th><th>partition</th><th>count</th></tr>");
            for late in &r.late_records {
                let _ = write!(
                    b,
                    "<tr><td class=l>{}</td><td class=l>{}</td><td>{}</td><td>{}</td></tr>",
                    escape(&late.window),
                    escape(&late.topic),
                    late.partition,
                    late.count
                );
            }
            b.push_str("</table>");
        }
        let _ = write!(
            b,
            "<p>JSON: <a href=\"/api/batches/{id}\">/api/batches/{id}</a></p>"
        );
        Some(page(&format!("batch {id} · {}", s.app_id), &b))
    })
}

/// A page for a refused form request.
pub(crate) fn error_page(message: &str) -> String {
    page(
        "request refused",
        &format!(
            "<h1>Request refused</h1><p id=error>{}</p><p><a href=\"/\">back</a></p>",
            escape(message)
        ),
    )
}
