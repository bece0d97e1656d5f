//! `/ember/v1`: what Lambda's API lacks — function logs, environment counts, package
//! downloads, health.

use std::collections::HashMap;
use std::convert::Infallible;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;

use crate::AppState;
use crate::error::ApiError;

/// How much of an existing log `GET …/logs` returns unless told otherwise.
const DEFAULT_LOG_BYTES: u64 = 64 * 1024;

pub async fn health() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

fn require_function(state: &AppState, name: &str) -> Result<(), ApiError> {
    match state.registry.dispatcher().stats(name) {
        Some(_) => Ok(()),
        None => Err(ApiError::FunctionNotFound(state.registry.arn(name, None))),
    }
}

/// `GET /ember/v1/functions/{name}/environments`: idle and busy environment counts.
pub async fn environments(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let name = crate::functions::unqualified(&state, &name)?;
    let stats = state
        .registry
        .dispatcher()
        .stats(&name)
        .ok_or_else(|| ApiError::FunctionNotFound(state.registry.arn(&name, None)))?;
    Ok(Json(serde_json::json!({ "Idle": stats.idle, "Busy": stats.busy })).into_response())
}

/// `GET /ember/v1/stats?Function=NAME`: per function, counters since the server started,
/// environments by state now, and peak concurrency per 10-second slot over the last 15
/// minutes (the last slot is the one in progress); and, across all functions, the retired
/// environments still being torn down.
pub async fn stats(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let function = query.get("Function");
    if let Some(name) = function {
        require_function(&state, name)?;
    }
    let stats = state
        .registry
        .dispatcher()
        .function_stats(function.map(String::as_str));
    Ok(Json(serde_json::json!({
        "SlotSeconds": ember_dispatch::STATS_SLOT.as_secs(),
        "Functions": stats,
        "EnvironmentsDestroying": state.registry.dispatcher().destroying(),
    }))
    .into_response())
}

/// `GET /ember/v1/events`: asynchronous events per function — queued, retrying (queued
/// after a failed attempt), running, failed — and the age of the oldest unfinished one.
pub async fn events(State(state): State<AppState>) -> Result<Response, ApiError> {
    let counts =
        crate::functions::blocking(&state.registry, |r| Ok(r.store().event_counts()?)).await?;
    let now = ember_events::now_ms();
    let functions: Vec<serde_json::Value> = counts
        .iter()
        .map(|c| {
            serde_json::json!({
                "Function": c.function,
                "Queued": c.queued,
                "Retrying": c.retrying,
                "Running": c.running,
                "Failed": c.failed,
                "OldestAgeSeconds": c.oldest_ms.map(|t| (now - t).max(0) as f64 / 1000.0),
            })
        })
        .collect();
    Ok(Json(serde_json::json!({ "Functions": functions })).into_response())
}

/// `GET /ember/v1/usage?Function=NAME&Days=N`: requests, billed duration, GB-seconds and
/// their cost per function, version and UTC day, over the last `Days` days (default 30,
/// today included), with the totals and the price table used.
pub async fn usage(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let days: u64 = match query.get("Days") {
        Some(d) => d
            .parse()
            .ok()
            .filter(|d| (1..=3660).contains(d))
            .ok_or_else(|| {
                ApiError::InvalidParameter(format!(
                    "Days must be a number from 1 to 3660 (got {d:?})"
                ))
            })?,
        None => 30,
    };
    let function = query.get("Function").cloned();
    let since = ember_core::time::utc_day(
        std::time::SystemTime::now() - std::time::Duration::from_secs((days - 1) * 86_400),
    );
    let prices = *state.registry.prices();
    let rows = crate::functions::blocking(&state.registry, {
        let since = since.clone();
        // A deleted function's usage stays on the record: no existence check.
        move |r| r.billed_usage(function.as_deref(), &since)
    })
    .await?;
    let mut total = ember_core::usage::Usage::default();
    let rows: Vec<serde_json::Value> = rows
        .into_iter()
        .map(|row| {
            total.add(&row.usage);
            let cost = row.usage.cost(&prices);
            let mut value = serde_json::to_value(&row).unwrap_or_default();
            value["Cost"] = cost.into();
            value
        })
        .collect();
    let mut total_value = serde_json::to_value(&total).unwrap_or_default();
    total_value["Cost"] = total.cost(&prices).into();
    Ok(Json(serde_json::json!({
        "Since": since,
        "Prices": prices,
        "Usage": rows,
        "Total": total_value,
    }))
    .into_response())
}

/// `GET /ember/v1/functions/{name}/code`: the package as uploaded.
pub async fn code(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let name = crate::functions::unqualified(&state, &name)?;
    let registry = std::sync::Arc::clone(&state.registry);
    let zip = tokio::task::spawn_blocking(move || -> Result<Vec<u8>, ApiError> {
        let record = registry.get(&name, None)?;
        std::fs::read(registry.artifacts().zip_path(&record.code_sha256))
            .map_err(|e| ApiError::Service(format!("could not read the package: {e}")))
    })
    .await
    .map_err(|e| ApiError::Service(e.to_string()))??;
    let mut response = Response::new(Body::from(zip));
    response
        .headers_mut()
        .insert("content-type", HeaderValue::from_static("application/zip"));
    Ok(response)
}

/// `GET /ember/v1/functions/{name}/logs[?bytes=N][&follow=true]`: the end of the function's
/// log; with `follow`, the response stays open and streams new output as it is written.
pub async fn logs(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let name = crate::functions::unqualified(&state, &name)?;
    require_function(&state, &name)?;
    let bytes: u64 = match query.get("bytes") {
        Some(b) => b.parse().map_err(|_| {
            ApiError::InvalidParameter(format!("bytes must be a whole number (got {b:?})"))
        })?,
        None => DEFAULT_LOG_BYTES,
    };
    let follow = query.get("follow").is_some_and(|f| f == "true" || f == "1");
    let read = state
        .registry
        .dispatcher()
        .logs()
        .read(&name, bytes, follow)
        .await;
    let (existing, live) = (read.existing, read.live);
    let mut response = match live {
        None => Response::new(Body::from(existing)),
        Some(live) => {
            let name: std::sync::Arc<str> = std::sync::Arc::from(name.as_str());
            let head = futures_util::stream::once(async move {
                Ok::<Bytes, Infallible>(Bytes::from(existing))
            });
            let tail = BroadcastStream::new(live).filter_map(move |chunk| {
                let name = std::sync::Arc::clone(&name);
                async move {
                    match chunk {
                        Ok(c) if c.function == name => Some(Ok(c.data)),
                        Ok(_) => None,
                        Err(BroadcastStreamRecvError::Lagged(n)) => Some(Ok(Bytes::from(format!(
                            "[ember: {n} log chunks skipped: the reader fell behind]\n"
                        )))),
                    }
                }
            });
            Response::new(Body::from_stream(head.chain(tail)))
        }
    };
    response.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    Ok(response)
}

/// `GET /ember/v1/artifacts/{sha256}.zip`: a stored package by its hash (layer downloads).
pub async fn artifact(
    State(state): State<AppState>,
    Path(file): Path<String>,
) -> Result<Response, ApiError> {
    let sha = file.strip_suffix(".zip").unwrap_or(&file).to_owned();
    if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::NotFound(format!("no package {file}")));
    }
    let path = state.registry.artifacts().zip_path(&sha);
    let zip = tokio::fs::read(&path)
        .await
        .map_err(|_| ApiError::NotFound(format!("no package {file}")))?;
    let mut response = Response::new(Body::from(zip));
    response
        .headers_mut()
        .insert("content-type", HeaderValue::from_static("application/zip"));
    Ok(response)
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct SettingsIn {
    freeze_idle: Option<bool>,
    isolation: Option<String>,
    network: Option<String>,
    /// `adaptive`, `fixed:10m`, or `server` for the server's policy.
    keep_alive: Option<String>,
    max_concurrency: Option<u32>,
    reuse_instance: Option<bool>,
}

fn settings_body(spec: &ember_core::FunctionSpec) -> Response {
    Json(serde_json::json!({
        "FreezeIdle": spec.freeze_idle,
        "Isolation": spec.backend(),
        "Network": spec.network,
        "KeepAlive": spec.keep_alive.map_or_else(|| "server".to_owned(), |k| k.to_string()),
        "MaxConcurrency": spec.max_concurrency,
        "ReuseInstance": spec.reuse_instance,
    }))
    .into_response()
}

/// `GET /ember/v1/functions/{name}/settings`: Ember's own per-function settings.
pub async fn get_settings(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let name = crate::functions::unqualified(&state, &name)?;
    let record = crate::functions::blocking(&state.registry, move |r| r.get(&name, None)).await?;
    Ok(settings_body(&record.spec))
}

/// `PUT /ember/v1/functions/{name}/settings`: change them (`{"FreezeIdle": true}`,
/// `{"Isolation": "gvisor"}`, `{"Network": "egress"}`, `{"KeepAlive": "adaptive"}`,
/// `{"MaxConcurrency": 8}`, `{"ReuseInstance": true}`). A change retires the function's
/// environments.
pub async fn put_settings(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let name = crate::functions::unqualified(&state, &name)?;
    let input: SettingsIn = crate::model::parse(&crate::functions::control_body(body).await?)?;
    let isolation = input
        .isolation
        .map(|i| i.parse::<ember_core::Isolation>())
        .transpose()
        .map_err(|e| ApiError::InvalidParameter(e.to_string()))?;
    let network = input
        .network
        .map(|n| n.parse::<ember_core::Network>())
        .transpose()
        .map_err(|e| ApiError::InvalidParameter(e.to_string()))?;
    let keep_alive = input
        .keep_alive
        .map(|k| match k.as_str() {
            "server" => Ok(None),
            other => other.parse::<ember_core::KeepAliveSetting>().map(Some),
        })
        .transpose()
        .map_err(ApiError::InvalidParameter)?;
    let update = ember_core::FunctionUpdate {
        freeze_idle: input.freeze_idle,
        isolation,
        network,
        keep_alive,
        max_concurrency: input.max_concurrency,
        reuse_instance: input.reuse_instance,
        ..Default::default()
    };
    let record = crate::functions::blocking(&state.registry, move |r| {
        r.update_config(&name, update, None)
    })
    .await?;
    Ok(settings_body(&record.spec))
}
