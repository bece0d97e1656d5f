//! Reserved concurrency (`Put/Get/DeleteFunctionConcurrency`), provisioned concurrency
//! (`Put/Get/Delete/ListProvisionedConcurrencyConfig(s)`) and the `/metrics` scrape.

use std::collections::HashMap;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use ember_dispatch::ProvisionedState;
use ember_store::ProvisionedRecord;

use crate::functions::{blocking, control_body, list_response, page, unqualified};
use crate::{ApiError, AppState};

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PutIn {
    reserved_concurrent_executions: Option<i64>,
}

/// `PUT /2017-10-31/functions/{name}/concurrency`.
pub async fn put(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let name = unqualified(&state, &name)?;
    let input: PutIn = crate::model::parse(&control_body(body).await?)?;
    let reserved = input.reserved_concurrent_executions.ok_or_else(|| {
        ApiError::InvalidParameter("ReservedConcurrentExecutions is required".into())
    })?;
    let reserved = u32::try_from(reserved).map_err(|_| {
        ApiError::InvalidParameter(format!(
            "ReservedConcurrentExecutions must be 0 or more (got {reserved})"
        ))
    })?;
    blocking(&state.registry, move |r| {
        r.set_reserved_concurrency(&name, Some(reserved))
    })
    .await?;
    Ok(Json(serde_json::json!({ "ReservedConcurrentExecutions": reserved })).into_response())
}

/// `GET /2019-09-30/functions/{name}/concurrency`: `{}` when the function has none.
pub async fn get(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let name = unqualified(&state, &name)?;
    let reserved = blocking(&state.registry, move |r| {
        r.get(&name, None)?;
        Ok(r.dispatcher().reserved(&name))
    })
    .await?;
    let body = match reserved {
        Some(n) => serde_json::json!({ "ReservedConcurrentExecutions": n }),
        None => serde_json::json!({}),
    };
    Ok(Json(body).into_response())
}

/// `DELETE /2017-10-31/functions/{name}/concurrency`.
pub async fn delete(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let name = unqualified(&state, &name)?;
    blocking(&state.registry, move |r| {
        r.set_reserved_concurrency(&name, None)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ProvisionedIn {
    provisioned_concurrent_executions: Option<i64>,
}

/// A provisioned concurrency configuration as Lambda reports it.
#[derive(serde::Serialize)]
#[serde(rename_all = "PascalCase")]
struct ProvisionedOut {
    #[serde(skip_serializing_if = "Option::is_none")]
    function_arn: Option<String>,
    requested_provisioned_concurrent_executions: u32,
    available_provisioned_concurrent_executions: u32,
    allocated_provisioned_concurrent_executions: u32,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    status_reason: Option<String>,
    last_modified: String,
}

fn provisioned_out(
    record: &ProvisionedRecord,
    state: ProvisionedState,
    function_arn: Option<String>,
) -> ProvisionedOut {
    // Environments beyond the request (a shrink in progress) are not the configuration's.
    let ready = state.allocated.min(record.requested);
    ProvisionedOut {
        function_arn,
        requested_provisioned_concurrent_executions: record.requested,
        available_provisioned_concurrent_executions: ready,
        allocated_provisioned_concurrent_executions: ready,
        status: state.status.as_str(),
        status_reason: state.reason,
        last_modified: record.last_modified.clone(),
    }
}

/// The `Qualifier` a provisioned concurrency call must carry.
fn qualifier(query: &HashMap<String, String>) -> Result<String, ApiError> {
    query.get("Qualifier").cloned().ok_or_else(|| {
        ApiError::InvalidParameter(
            "Qualifier is required: provisioned concurrency applies to a published version or an alias"
                .into(),
        )
    })
}

/// `PUT /2019-09-30/functions/{name}/provisioned-concurrency?Qualifier=Q`: 202, and the
/// environments start in the background (`IN_PROGRESS` until all are initialized).
pub async fn put_provisioned(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    body: Body,
) -> Result<Response, ApiError> {
    let name = unqualified(&state, &name)?;
    let qualifier = qualifier(&query)?;
    let input: ProvisionedIn = crate::model::parse(&control_body(body).await?)?;
    let requested = input.provisioned_concurrent_executions.ok_or_else(|| {
        ApiError::InvalidParameter("ProvisionedConcurrentExecutions is required".into())
    })?;
    let requested = u32::try_from(requested).map_err(|_| {
        ApiError::InvalidParameter(format!(
            "ProvisionedConcurrentExecutions must be 1 or more (got {requested})"
        ))
    })?;
    let (record, now) = blocking(&state.registry, move |r| {
        let record = r.put_provisioned(&name, &qualifier, requested)?;
        r.get_provisioned(&record.function, &record.qualifier)
    })
    .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(provisioned_out(&record, now, None)),
    )
        .into_response())
}

/// `GET /2019-09-30/functions/{name}/provisioned-concurrency?Qualifier=Q`, or with
/// `?List=ALL` every configuration of the function.
pub async fn get_provisioned(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let name = unqualified(&state, &name)?;
    if query.get("List").is_some_and(|l| l == "ALL") {
        let registry = std::sync::Arc::clone(&state.registry);
        let all = blocking(&state.registry, move |r| r.list_provisioned(Some(&name))).await?;
        let configs: Vec<ProvisionedOut> = all
            .into_iter()
            .map(|(record, now)| {
                let arn = registry.arn(&record.function, Some(&record.qualifier));
                provisioned_out(&record, now, Some(arn))
            })
            .collect();
        let (configs, next) = page(configs, &query)?;
        return Ok(list_response(
            "ProvisionedConcurrencyConfigs",
            configs,
            next,
        ));
    }
    let qualifier = qualifier(&query)?;
    let (record, now) = blocking(&state.registry, move |r| {
        r.get_provisioned(&name, &qualifier)
    })
    .await?;
    Ok(Json(provisioned_out(&record, now, None)).into_response())
}

/// `DELETE /2019-09-30/functions/{name}/provisioned-concurrency?Qualifier=Q`.
pub async fn delete_provisioned(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let name = unqualified(&state, &name)?;
    let qualifier = qualifier(&query)?;
    blocking(&state.registry, move |r| {
        r.delete_provisioned(&name, &qualifier)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /metrics`: OpenMetrics text, as Prometheus scrapes it.
pub async fn metrics(State(state): State<AppState>) -> Response {
    let mut text = state.registry.dispatcher().metrics_text();
    // The event queue's gauges come from the store; they go before the closing `# EOF`.
    let counts = blocking(&state.registry, |r| {
        let now = ember_events::now_ms();
        let queues = r
            .store()
            .queues()?
            .into_iter()
            .map(|q| Ok((q.name.clone(), r.store().queue_counts(&q.name, now)?)))
            .collect::<Result<Vec<_>, ApiError>>()?;
        Ok((r.store().event_counts()?, queues))
    })
    .await;
    match counts {
        Ok((events, queues)) => {
            let at = text.rfind("# EOF").unwrap_or(text.len());
            let mut extra = event_metrics(&events, ember_events::now_ms());
            extra.push_str(&queue_metrics(&queues));
            text.insert_str(at, &extra);
        }
        Err(e) => tracing::error!(error = %e, "could not count the queued events"),
    }
    let mut response = text.into_response();
    response.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    response
}

/// The event queue as OpenMetrics families: events by state, and the oldest one's age.
fn event_metrics(counts: &[ember_store::EventCounts], now_ms: i64) -> String {
    use std::fmt::Write as _;
    let mut out = String::from(
        "# HELP ember_events Asynchronous events now, by state (failed: ended without success).\n\
         # TYPE ember_events gauge\n",
    );
    for c in counts {
        for (state, n) in [
            ("queued", c.queued),
            ("retrying", c.retrying),
            ("running", c.running),
            ("failed", c.failed),
        ] {
            let _ = writeln!(
                out,
                "ember_events{{function=\"{}\",state=\"{state}\"}} {n}",
                c.function
            );
        }
    }
    out.push_str(
        "# HELP ember_event_age_seconds Age of each function's oldest unfinished event.\n\
         # TYPE ember_event_age_seconds gauge\n",
    );
    for c in counts {
        if let Some(oldest) = c.oldest_ms {
            let age = (now_ms - oldest).max(0) as f64 / 1000.0;
            let _ = writeln!(
                out,
                "ember_event_age_seconds{{function=\"{}\"}} {age}",
                c.function
            );
        }
    }
    out
}

/// Messages of each queue by state: visible, in flight (received, not deleted), delayed.
fn queue_metrics(queues: &[(String, ember_store::QueueCounts)]) -> String {
    use std::fmt::Write as _;
    let mut out = String::from(
        "# HELP ember_queue_messages Messages in each queue now, by state.\n\
         # TYPE ember_queue_messages gauge\n",
    );
    for (queue, c) in queues {
        for (state, n) in [
            ("visible", c.visible),
            ("in_flight", c.in_flight),
            ("delayed", c.delayed),
        ] {
            let _ = writeln!(
                out,
                "ember_queue_messages{{queue=\"{queue}\",state=\"{state}\"}} {n}"
            );
        }
    }
    out
}
