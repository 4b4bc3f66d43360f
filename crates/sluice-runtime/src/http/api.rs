//! Routes: the UI, the JSON API, `/metrics` and the control endpoints.
//! Handlers read the snapshot the driver publishes; the control endpoints
//! only record requests the driver takes between batches.

// A refusal is the response itself, built once per refused request; boxing
// it would only add an allocation.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::FormRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::control::RateChange;
use super::monitor::{BatchView, Monitor, Status, RETAINED_BATCHES};
use super::ui;

#[derive(Clone)]
struct App {
    monitor: Arc<Monitor>,
    token: Option<Arc<str>>,
}

pub(crate) fn router(monitor: Arc<Monitor>, token: Option<String>) -> Router {
    Router::new()
        .route("/", get(overview_page))
        .route("/batches/{id}", get(batch_page))
        .route("/metrics", get(metrics))
        .route("/api/overview", get(overview))
        .route("/api/batches", get(batches))
        .route("/api/batches/{id}", get(batch))
        .route("/api/partitions", get(partitions))
        .route("/api/control/pause", post(pause))
        .route("/api/control/resume", post(resume))
        .route("/api/control/rate", post(rate))
        .route(
            "/control/{action}",
            post(form_control).fallback(form_method_not_allowed),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(App {
            monitor,
            token: token.map(Into::into),
        })
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "no such page")
}

async fn method_not_allowed() -> Response {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        "not with this method: pages and reads are GET, control requests POST",
    )
}

/// The UI's control forms answer a browser (a bookmarked or reloaded
/// action address) with a page, as their other errors do.
async fn form_method_not_allowed(Path(action): Path<String>) -> Response {
    if !matches!(action.as_str(), "pause" | "resume" | "rate") {
        return html_error(
            StatusCode::NOT_FOUND,
            &format!("no control action '{action}'"),
        );
    }
    let mut response = html_error(
        StatusCode::METHOD_NOT_ALLOWED,
        "a control action is a form sent from the job's page: go back to the overview and \
         use its buttons",
    );
    response
        .headers_mut()
        .insert(header::ALLOW, "POST".parse().expect("valid"));
    response
}

/// Equal in time independent of where the strings differ.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The token of an `Authorization: Bearer <token>` header; the scheme's
/// name is case-insensitive (RFC 7235).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Checks the access token of a request that changes the job, given in an
/// `Authorization: Bearer` header or (for the UI's forms) a form field.
fn authorize(app: &App, headers: &HeaderMap, form_token: Option<&str>) -> Result<(), Response> {
    if app.monitor.history {
        return Err(error(
            StatusCode::CONFLICT,
            "this endpoint serves a checkpoint (sluice ui), not a running job: there is no job \
             to control here; a running job is controlled through its own endpoint",
        ));
    }
    let Some(token) = &app.token else {
        return Ok(());
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token)
        .or(form_token);
    match given {
        None => {
            let mut response = error(
                StatusCode::UNAUTHORIZED,
                "this endpoint changes the job and needs the access token: send `Authorization: Bearer <token>`",
            );
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, "Bearer".parse().expect("valid"));
            Err(response)
        }
        Some(given) if same_secret(given.trim().as_bytes(), token.as_bytes()) => Ok(()),
        Some(_) => Err(error(StatusCode::FORBIDDEN, "wrong access token")),
    }
}

/// A form posted from another site's page must not steer the job: when the
/// browser says where the form came from, it must be this endpoint.
fn same_origin(headers: &HeaderMap) -> Result<(), Response> {
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    match (origin, host) {
        (Some(origin), Some(host))
            if origin.split("://").nth(1).unwrap_or(origin) != host && origin != "null" =>
        {
            Err(html_error(
                StatusCode::FORBIDDEN,
                &format!("a form from {origin} may not change this job"),
            ))
        }
        _ => Ok(()),
    }
}

fn html_error(status: StatusCode, message: &str) -> Response {
    (status, Html(ui::error_page(message))).into_response()
}

async fn overview_page(State(app): State<App>) -> Html<String> {
    Html(ui::overview(&app.monitor))
}

async fn batch_page(State(app): State<App>, Path(id): Path<String>) -> Response {
    let Ok(id) = id.parse::<u64>() else {
        return html_error(
            StatusCode::BAD_REQUEST,
            &format!("'{id}' is not a batch id"),
        );
    };
    match ui::batch(&app.monitor, id) {
        Some(page) => Html(page).into_response(),
        None => html_error(StatusCode::NOT_FOUND, &missing_batch(&app.monitor, id)),
    }
}

async fn metrics(State(app): State<App>) -> Response {
    // A checkpoint's history has no live counters: zeros beside the
    // history's own figures would contradict /api/overview.
    if app.monitor.history {
        return error(
            StatusCode::NOT_FOUND,
            "no metrics here: this is a stopped job's checkpoint (sluice ui); metrics come \
             from a running job's endpoint (GET /metrics of the address set with .http(..)); \
             the batch history is in /api/overview and /api/batches",
        );
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        app.monitor.metrics.encode(),
    )
        .into_response()
}

#[derive(Serialize)]
struct Limits {
    max_rate: Option<f64>,
    max_rate_per_partition: Option<f64>,
    min_rate_per_partition: f64,
    per_partition_max: BTreeMap<String, f64>,
    backpressure: bool,
    initial_rate: Option<f64>,
    backpressure_estimate: Option<f64>,
}

#[derive(Serialize)]
struct Overview {
    app_id: String,
    status: Status,
    paused: bool,
    started_ms: i64,
    /// `None` for a stopped job's checkpoint (`sluice ui`): no job runs.
    uptime_seconds: Option<f64>,
    batch_interval_ms: u64,
    /// `None` for a checkpoint (`sluice ui`): it does not hold the job's
    /// settings; each batch record holds the limit it ran under.
    rate_limits: Option<Limits>,
    batches_committed: u64,
    /// `None` when not known: a checkpoint's history without its first
    /// batches.
    records_read: Option<u64>,
    last_batch: Option<u64>,
    retained_batches: usize,
    token_required: bool,
}

async fn overview(State(app): State<App>) -> Json<Overview> {
    let monitor = &app.monitor;
    let limits = monitor.control.limits();
    let paused = monitor.control.is_paused();
    let uptime_seconds = (!monitor.history).then(|| monitor.uptime().as_secs_f64());
    Json(monitor.read(|s| Overview {
        app_id: s.app_id.clone(),
        status: s.status.clone(),
        paused,
        started_ms: s.started_ms,
        uptime_seconds,
        batch_interval_ms: s.batch_interval.as_millis() as u64,
        rate_limits: (!monitor.history).then(|| {
            Limits {
                max_rate: limits.max_rate,
                max_rate_per_partition: limits.max_rate_per_partition,
                min_rate_per_partition: limits.min_rate_per_partition,
                per_partition_max: limits
                    .per_partition_max
                    .iter()
                    .map(|(tp, rate)| (tp.to_string(), *rate))
                    .collect(),
                backpressure: limits.backpressure,
                initial_rate: limits.initial_rate,
                backpressure_estimate: s.estimate.filter(|_| limits.backpressure),
            }
        }),
        batches_committed: s.batches_committed,
        records_read: s.records_read,
        last_batch: s.batches.back().map(|v| v.record.id),
        retained_batches: s.batches.len(),
        token_required: s.token_required,
    }))
}

#[derive(Deserialize)]
struct BatchesQuery {
    limit: Option<usize>,
}

async fn batches(
    State(app): State<App>,
    query: Result<Query<BatchesQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(query)) = query else {
        return error(StatusCode::BAD_REQUEST, "limit must be a number of batches");
    };
    let limit = query.limit.unwrap_or(100);
    let batches: Vec<BatchView> = app
        .monitor
        .read(|s| s.batches.iter().rev().take(limit).cloned().collect());
    Json(json!({ "batches": batches })).into_response()
}

async fn batch(State(app): State<App>, Path(id): Path<String>) -> Response {
    let Ok(id) = id.parse::<u64>() else {
        return error(StatusCode::BAD_REQUEST, format!("'{id}' is not a batch id"));
    };
    match app
        .monitor
        .read(|s| s.batches.iter().find(|v| v.record.id == id).cloned())
    {
        Some(view) => Json(view).into_response(),
        None => error(StatusCode::NOT_FOUND, missing_batch(&app.monitor, id)),
    }
}

/// Why batch `id` is not shown: not committed yet, or no longer retained.
fn missing_batch(monitor: &Monitor, id: u64) -> String {
    let last = monitor.read(|s| s.batches.back().map(|v| v.record.id));
    match last {
        Some(last) if id > last => {
            format!("no batch {id}: the last committed batch is {last}")
        }
        None if monitor.history => format!("no batch {id}: the checkpoint holds no batch"),
        None => format!(
            "batch {id} is not in this run, which has committed no batch yet; the checkpoint's \
             history has earlier ones (sluice batches DIR)"
        ),
        Some(_) if monitor.history => format!(
            "batch {id} is not among the last {RETAINED_BATCHES} batches of the checkpoint's history"
        ),
        Some(_) => format!(
            "batch {id} is not among the last {RETAINED_BATCHES} batches of this run; the \
             checkpoint's history has older ones (sluice batches DIR)"
        ),
    }
}

async fn partitions(State(app): State<App>) -> Response {
    let partitions = app.monitor.read(|s| s.partitions.clone());
    Json(json!({ "partitions": partitions })).into_response()
}

fn paused(app: &App, paused: bool) -> serde_json::Value {
    let changed = app.monitor.control.set_paused(paused);
    json!({ "paused": paused, "changed": changed, "applies": "between batches: the batch in flight finishes first" })
}

async fn pause(State(app): State<App>, headers: HeaderMap) -> Response {
    if let Err(refused) = authorize(&app, &headers, None) {
        return refused;
    }
    Json(paused(&app, true)).into_response()
}

async fn resume(State(app): State<App>, headers: HeaderMap) -> Response {
    if let Err(refused) = authorize(&app, &headers, None) {
        return refused;
    }
    Json(paused(&app, false)).into_response()
}

async fn rate(State(app): State<App>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(refused) = authorize(&app, &headers, None) {
        return refused;
    }
    let change = match RateChange::from_json(&body) {
        Ok(change) => change,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "the body must be a JSON object with max_rate, max_rate_per_partition \
                     (numbers, or null for no limit) and backpressure (true/false): {e}"
                ),
            )
        }
    };
    match app.monitor.control.change_rate(&change) {
        Ok(change) => {
            Json(json!({ "accepted": change, "applies": "from the next batch" })).into_response()
        }
        Err(message) => error(StatusCode::BAD_REQUEST, message),
    }
}

/// The UI's forms: `pause`, `resume` and `rate`, form-encoded, answered
/// with a redirect to the overview.
async fn form_control(
    State(app): State<App>,
    Path(action): Path<String>,
    headers: HeaderMap,
    form: Result<Form<Vec<(String, String)>>, FormRejection>,
) -> Response {
    if let Err(refused) = same_origin(&headers) {
        return refused;
    }
    let form = match form {
        Ok(Form(fields)) => match form_fields(fields) {
            Ok(form) => form,
            Err(message) => return html_error(StatusCode::BAD_REQUEST, &message),
        },
        Err(rejection) => {
            return html_error(
                rejection.status(),
                &format!("the form could not be read: {}", rejection.body_text()),
            )
        }
    };
    if let Err(refused) = authorize(&app, &headers, form.get("token").map(String::as_str)) {
        let status = refused.status();
        return html_error(status, "the access token is missing or wrong");
    }
    match action.as_str() {
        "pause" => {
            paused(&app, true);
        }
        "resume" => {
            paused(&app, false);
        }
        "rate" => {
            let change =
                rate_form(&form).and_then(|change| app.monitor.control.change_rate(&change));
            if let Err(message) = change {
                return html_error(StatusCode::BAD_REQUEST, &message);
            }
        }
        other => {
            return html_error(
                StatusCode::NOT_FOUND,
                &format!("no control action '{other}'"),
            );
        }
    }
    Redirect::to("/").into_response()
}

/// The rate form's fields: an empty rate (or `none`) removes the limit.
/// A control form's fields by name; a field given twice is refused, as
/// in the JSON API (the last one would win unseen).
fn form_fields(fields: Vec<(String, String)>) -> Result<HashMap<String, String>, String> {
    let mut form = HashMap::with_capacity(fields.len());
    for (name, value) in fields {
        if form.contains_key(&name) {
            return Err(format!("the form gives '{name}' twice"));
        }
        form.insert(name, value);
    }
    Ok(form)
}

fn rate_form(form: &HashMap<String, String>) -> Result<RateChange, String> {
    let rate = |field: &str| -> Result<Option<Option<f64>>, String> {
        match form.get(field).map(|v| v.trim()) {
            None => Ok(None),
            Some("") | Some("none") => Ok(Some(None)),
            Some(v) => v
                .parse::<f64>()
                .map(|r| Some(Some(r)))
                .map_err(|_| format!("{field} '{v}' is not a number")),
        }
    };
    Ok(RateChange {
        max_rate: rate("max_rate")?,
        max_rate_per_partition: rate("max_rate_per_partition")?,
        backpressure: match form.get("backpressure").map(String::as_str) {
            None => None,
            Some("on") => Some(true),
            Some("off") => Some(false),
            Some(v) => return Err(format!("backpressure '{v}' is not on or off")),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_control_form_with_a_field_twice_is_refused() {
        let twice = vec![
            ("max_rate".to_owned(), "1".to_owned()),
            ("max_rate".to_owned(), String::new()),
        ];
        let error = form_fields(twice).unwrap_err();
        assert!(error.contains("'max_rate' twice"), "{error}");
        let once = form_fields(vec![("max_rate".to_owned(), "1".to_owned())]).unwrap();
        assert_eq!(once["max_rate"], "1");
    }

    /// Regression: `bearer <token>` (the scheme in lower case, as RFC 7235
    /// allows) was answered 401 "needs the access token".
    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        for header in ["Bearer s3cret", "bearer s3cret", "BEARER  s3cret"] {
            assert_eq!(bearer_token(header), Some("s3cret"), "{header}");
        }
        for header in ["Basic s3cret", "Bearers3cret", "s3cret"] {
            assert_eq!(bearer_token(header), None, "{header}");
        }
    }
}
