//! Event source mappings from queues: `Create/Get/Update/Delete/ListEventSourceMapping(s)`
//! at `/2015-03-31/event-source-mappings`. The poller is `ember_events::mapping`.

use std::collections::HashMap;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use ember_store::SourceMapping;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::functions::{blocking, control_body, function_ref, list_response, page};
use crate::{ApiError, AppState, Registry};

/// Batches of one mapping running at once when `ScalingConfig` does not say.
const DEFAULT_CONCURRENCY: u32 = 10;

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct MappingIn {
    event_source_arn: Option<String>,
    function_name: Option<String>,
    batch_size: Option<u32>,
    maximum_batching_window_in_seconds: Option<u32>,
    enabled: Option<bool>,
    function_response_types: Option<Vec<String>>,
    scaling_config: Option<Value>,
}

fn out(registry: &Registry, m: &SourceMapping) -> Value {
    let config = registry.dispatcher().config();
    json!({
        "UUID": m.uuid,
        "EventSourceArn": format!("arn:aws:sqs:{}:{}:{}", config.region, config.account, m.queue),
        "FunctionArn": registry.arn(&m.function, m.qualifier.as_deref()),
        "BatchSize": m.batch_size,
        "MaximumBatchingWindowInSeconds": m.window_s,
        "State": if m.enabled { "Enabled" } else { "Disabled" },
        "StateTransitionReason": "USER_INITIATED",
        "LastModified": m.last_modified_ms as f64 / 1000.0,
        "FunctionResponseTypes": if m.report_failures { json!(["ReportBatchItemFailures"]) } else { json!([]) },
        "ScalingConfig": { "MaximumConcurrency": m.max_concurrency },
    })
}

/// Applies `input` over `base`, checking every field.
fn merged(
    registry: &Registry,
    base: SourceMapping,
    input: MappingIn,
) -> Result<SourceMapping, ApiError> {
    let mut m = base;
    if let Some(name) = input.function_name {
        let config = registry.dispatcher().config();
        let reference =
            ember_core::arn::FunctionRef::parse(&name, &config.region, &config.account)?;
        registry.get(&reference.name, reference.qualifier.as_ref())?;
        m.function = reference.name;
        m.qualifier = reference.qualifier.map(|q| q.to_string());
    }
    if let Some(n) = input.batch_size {
        m.batch_size = n;
    }
    if let Some(w) = input.maximum_batching_window_in_seconds {
        m.window_s = w;
    }
    if let Some(e) = input.enabled {
        m.enabled = e;
    }
    if let Some(types) = input.function_response_types {
        if let Some(other) = types.iter().find(|t| *t != "ReportBatchItemFailures") {
            return Err(ApiError::InvalidParameter(format!(
                "FunctionResponseTypes may only hold ReportBatchItemFailures (got {other:?})"
            )));
        }
        m.report_failures = !types.is_empty();
    }
    if let Some(scaling) = input.scaling_config {
        m.max_concurrency = scaling["MaximumConcurrency"]
            .as_u64()
            .map(|n| n as u32)
            .filter(|n| (2..=1000).contains(n))
            .ok_or_else(|| {
                ApiError::InvalidParameter(
                    "ScalingConfig.MaximumConcurrency must be from 2 to 1000".into(),
                )
            })?;
    }
    if !(1..=10_000).contains(&m.batch_size) {
        return Err(ApiError::InvalidParameter(format!(
            "BatchSize must be from 1 to 10000 (got {})",
            m.batch_size
        )));
    }
    if m.window_s > 300 {
        return Err(ApiError::InvalidParameter(
            "MaximumBatchingWindowInSeconds must be from 0 to 300".into(),
        ));
    }
    if m.batch_size > 10 && m.window_s == 0 {
        return Err(ApiError::InvalidParameter(
            "a BatchSize above 10 needs a MaximumBatchingWindowInSeconds of at least 1".into(),
        ));
    }
    m.last_modified_ms = ember_events::now_ms();
    Ok(m)
}

fn find(registry: &Registry, uuid: &str) -> Result<SourceMapping, ApiError> {
    registry
        .store()
        .mappings()?
        .into_iter()
        .find(|m| m.uuid == uuid)
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "The resource you requested does not exist: event source mapping {uuid}"
            ))
        })
}

/// `POST /2015-03-31/event-source-mappings`: 202.
pub async fn create(State(state): State<AppState>, body: Body) -> Result<Response, ApiError> {
    let input: MappingIn = crate::model::parse(&control_body(body).await?)?;
    let mapping = blocking(&state.registry, move |r| {
        let _guard = r.lock_changes();
        let arn = input.event_source_arn.clone().ok_or_else(|| {
            ApiError::InvalidParameter("EventSourceArn is required (a queue's ARN)".into())
        })?;
        let config = r.dispatcher().config();
        let prefix = format!("arn:aws:sqs:{}:{}:", config.region, config.account);
        let queue = arn.strip_prefix(&prefix).ok_or_else(|| {
            ApiError::InvalidParameter(format!(
                "EventSourceArn must be a queue of this server ({prefix}NAME); got {arn:?}"
            ))
        })?;
        r.store()
            .queue(queue)?
            .ok_or_else(|| ApiError::InvalidParameter(format!("the queue {arn} does not exist")))?;
        if input.function_name.is_none() {
            return Err(ApiError::InvalidParameter(
                "FunctionName is required".into(),
            ));
        }
        let base = SourceMapping {
            uuid: uuid::Uuid::new_v4().to_string(),
            queue: queue.to_owned(),
            function: String::new(),
            qualifier: None,
            batch_size: 10,
            window_s: 0,
            enabled: true,
            report_failures: false,
            max_concurrency: DEFAULT_CONCURRENCY,
            last_modified_ms: 0,
        };
        let mapping = merged(r, base, input)?;
        r.store().put_mapping(&mapping)?;
        Ok(out(r, &mapping))
    })
    .await?;
    Ok((StatusCode::ACCEPTED, Json(mapping)).into_response())
}

pub async fn list(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let function = match query.get("FunctionName") {
        Some(f) => Some(function_ref(&state, f, None)?.name),
        None => None,
    };
    let source = query.get("EventSourceArn").cloned();
    let items = blocking(&state.registry, move |r| {
        Ok(r.store()
            .mappings()?
            .iter()
            .filter(|m| function.as_deref().is_none_or(|f| m.function == f))
            .map(|m| out(r, m))
            .filter(|v| source.as_deref().is_none_or(|s| v["EventSourceArn"] == s))
            .collect::<Vec<_>>())
    })
    .await?;
    let (items, next) = page(items, &query)?;
    Ok(list_response("EventSourceMappings", items, next))
}

pub async fn get(
    State(state): State<AppState>,
    Path(uuid): Path<String>,
) -> Result<Response, ApiError> {
    let m = blocking(&state.registry, move |r| Ok(out(r, &find(r, &uuid)?))).await?;
    Ok(Json(m).into_response())
}

pub async fn update(
    State(state): State<AppState>,
    Path(uuid): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let input: MappingIn = crate::model::parse(&control_body(body).await?)?;
    let m = blocking(&state.registry, move |r| {
        let _guard = r.lock_changes();
        let mapping = merged(r, find(r, &uuid)?, input)?;
        r.store().put_mapping(&mapping)?;
        Ok(out(r, &mapping))
    })
    .await?;
    Ok((StatusCode::ACCEPTED, Json(m)).into_response())
}

pub async fn delete(
    State(state): State<AppState>,
    Path(uuid): Path<String>,
) -> Result<Response, ApiError> {
    let m = blocking(&state.registry, move |r| {
        let _guard = r.lock_changes();
        let mapping = find(r, &uuid)?;
        r.store().delete_mapping(&uuid)?;
        let mut v = out(r, &mapping);
        v["State"] = "Deleting".into();
        Ok(v)
    })
    .await?;
    Ok((StatusCode::ACCEPTED, Json(m)).into_response())
}
