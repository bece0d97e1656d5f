//! Lambda control-plane handlers: CreateFunction, GetFunction, GetFunctionConfiguration,
//! ListFunctions, UpdateFunctionCode, UpdateFunctionConfiguration, DeleteFunction.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use ember_store::FunctionRecord;

use crate::error::ApiError;
use crate::model::{self, CreateFunctionIn, FunctionConfiguration, UpdateCodeIn, UpdateConfigIn};
use crate::registry::Registry;
use crate::{AppState, read_body};

/// Largest control-plane request: a 50 MB zip as base64 plus JSON around it.
const CONTROL_BODY_BYTES: usize = 70 * 1024 * 1024;

/// Runs a blocking registry call off the async workers.
async fn blocking<T: Send + 'static>(
    registry: &Arc<Registry>,
    f: impl FnOnce(&Registry) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let registry = Arc::clone(registry);
    tokio::task::spawn_blocking(move || f(&registry))
        .await
        .map_err(|e| ApiError::Service(format!("a control-plane task failed: {e}")))?
}

fn configuration(registry: &Registry, record: &FunctionRecord) -> FunctionConfiguration {
    FunctionConfiguration::new(record, registry.arn(&record.spec.name))
}

async fn control_body(body: Body) -> Result<bytes::Bytes, ApiError> {
    read_body(body, CONTROL_BODY_BYTES).await.map_err(|_| {
        ApiError::EntityTooLarge(format!(
            "Request must be smaller than {CONTROL_BODY_BYTES} bytes; zip files must be at most 50 MB"
        ))
    })
}

pub async fn create(State(state): State<AppState>, body: Body) -> Result<Response, ApiError> {
    let body = control_body(body).await?;
    let input: CreateFunctionIn = model::parse(&body)?;
    model::refuse_unsupported(
        input.package_type.as_deref(),
        input.architectures.as_deref(),
        input.layers.as_deref(),
    )?;
    let spec = input.spec();
    let zip = model::decode_zip(
        input.code.zip_file.as_deref(),
        input.code.s3_bucket.is_some(),
    )?;
    let record = blocking(&state.registry, move |r| r.create(spec, &zip)).await?;
    Ok((
        StatusCode::CREATED,
        Json(configuration(&state.registry, &record)),
    )
        .into_response())
}

pub async fn get_configuration(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let record = blocking(&state.registry, move |r| r.get(&name)).await?;
    Ok(Json(configuration(&state.registry, &record)).into_response())
}

pub async fn get(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let record = blocking(&state.registry, move |r| r.get(&name)).await?;
    let host = headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1:9000");
    let body = serde_json::json!({
        "Configuration": configuration(&state.registry, &record),
        "Code": {
            "RepositoryType": "S3",
            "Location": format!("http://{host}/ember/v1/functions/{}/code", record.spec.name),
        },
        "Tags": {},
    });
    Ok(Json(body).into_response())
}

pub async fn list(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let max_items: usize = match query.get("MaxItems") {
        Some(m) => m
            .parse()
            .ok()
            .filter(|n| (1..=10_000).contains(n))
            .ok_or_else(|| {
                ApiError::InvalidParameter(format!(
                    "MaxItems must be a number from 1 to 10000 (got {m:?})"
                ))
            })?,
        None => 50,
    };
    let marker = query.get("Marker").cloned();
    let records = blocking(&state.registry, |r| r.list()).await?;
    // The marker is the name of the last function of the previous page.
    let page: Vec<&FunctionRecord> = records
        .iter()
        .filter(|r| {
            marker
                .as_ref()
                .is_none_or(|m| r.spec.name.as_str() > m.as_str())
        })
        .take(max_items)
        .collect();
    let more = page.last().is_some_and(|last| {
        records
            .last()
            .is_some_and(|end| end.spec.name != last.spec.name)
    });
    let functions: Vec<_> = page
        .iter()
        .map(|r| configuration(&state.registry, r))
        .collect();
    let mut body = serde_json::json!({ "Functions": functions });
    if more {
        body["NextMarker"] = page.last().map(|r| r.spec.name.clone()).into();
    }
    Ok(Json(body).into_response())
}

pub async fn update_code(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let body = control_body(body).await?;
    let input: UpdateCodeIn = model::parse(&body)?;
    model::refuse_unsupported(None, input.architectures.as_deref(), None)?;
    let zip = model::decode_zip(input.zip_file.as_deref(), input.s3_bucket.is_some())?;
    let revision = input.revision_id.clone();
    let record = blocking(&state.registry, move |r| {
        r.update_code(&name, &zip, revision.as_deref())
    })
    .await?;
    Ok(Json(configuration(&state.registry, &record)).into_response())
}

pub async fn update_configuration(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let body = control_body(body).await?;
    let input: UpdateConfigIn = model::parse(&body)?;
    model::refuse_unsupported(None, None, input.layers.as_deref())?;
    let update = input.update();
    let revision = input.revision_id.clone();
    let record = blocking(&state.registry, move |r| {
        r.update_config(&name, update, revision.as_deref())
    })
    .await?;
    Ok(Json(configuration(&state.registry, &record)).into_response())
}

pub async fn delete(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    blocking(&state.registry, move |r| r.delete(&name)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
