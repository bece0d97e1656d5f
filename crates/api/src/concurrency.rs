//! Reserved concurrency (`Put/Get/DeleteFunctionConcurrency`) and the `/metrics` scrape.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};

use crate::functions::{blocking, control_body, unqualified};
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
    Ok(axum::http::StatusCode::NO_CONTENT.into_response())
}

/// `GET /metrics`: OpenMetrics text, as Prometheus scrapes it.
pub async fn metrics(State(state): State<AppState>) -> Response {
    let text = state.registry.dispatcher().metrics_text();
    let mut response = text.into_response();
    response.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    response
}
