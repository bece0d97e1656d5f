//! Lambda control-plane handlers for functions: CreateFunction, GetFunction,
//! GetFunctionConfiguration, ListFunctions, UpdateFunctionCode,
//! UpdateFunctionConfiguration, DeleteFunction. Every `{name}` may be a name, a
//! `NAME:QUALIFIER`, or a full or partial ARN.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use ember_core::arn::{FunctionRef, Qualifier};
use ember_store::FunctionRecord;

use crate::error::ApiError;
use crate::model::{self, CreateFunctionIn, FunctionConfiguration, UpdateCodeIn, UpdateConfigIn};
use crate::registry::Registry;
use crate::{AppState, read_body};

/// Largest control-plane request: a 50 MB zip as base64 plus JSON around it.
const CONTROL_BODY_BYTES: usize = 70 * 1024 * 1024;

/// Runs a blocking registry call off the async workers.
pub(crate) async fn blocking<T: Send + 'static>(
    registry: &Arc<Registry>,
    f: impl FnOnce(&Registry) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let registry = Arc::clone(registry);
    tokio::task::spawn_blocking(move || f(&registry))
        .await
        .map_err(|e| ApiError::Service(format!("a control-plane task failed: {e}")))?
}

/// Parses a `{name}` path segment and an optional `Qualifier` parameter.
pub(crate) fn function_ref(
    state: &AppState,
    raw: &str,
    qualifier: Option<&str>,
) -> Result<FunctionRef, ApiError> {
    let config = state.registry.dispatcher().config();
    Ok(FunctionRef::parse(raw, &config.region, &config.account)?.with_qualifier(qualifier)?)
}

/// The function name of a reference that must name `$LATEST` (operations that change the
/// mutable function).
pub(crate) fn unqualified(state: &AppState, raw: &str) -> Result<String, ApiError> {
    let reference = function_ref(state, raw, None)?;
    match reference.qualifier {
        None | Some(Qualifier::Latest) => Ok(reference.name),
        Some(q) => Err(ApiError::InvalidParameter(format!(
            "this operation changes $LATEST only; drop the qualifier {q:?} from the function name"
        ))),
    }
}

/// The configuration as reported: under the ARN the caller used when qualified.
pub(crate) fn configuration(
    registry: &Registry,
    record: &FunctionRecord,
    qualifier: Option<&Qualifier>,
) -> FunctionConfiguration {
    let arn = match qualifier {
        Some(q) => registry.arn(&record.spec.name, Some(&q.to_string())),
        None => registry.record_arn(record),
    };
    let mut config = FunctionConfiguration::new(record, arn);
    config.layers = registry
        .layer_sizes(&record.spec)
        .into_iter()
        .map(|(arn, size)| serde_json::json!({ "Arn": arn, "CodeSize": size }))
        .collect();
    config
}

pub(crate) async fn control_body(body: Body) -> Result<bytes::Bytes, ApiError> {
    read_body(body, CONTROL_BODY_BYTES).await.map_err(|_| {
        ApiError::EntityTooLarge(format!(
            "Request must be smaller than {CONTROL_BODY_BYTES} bytes; zip files must be at most 50 MB"
        ))
    })
}

/// `Marker` (an opaque offset) and `MaxItems` (1–10000, default 50) of a list call.
pub(crate) fn page<T>(
    items: Vec<T>,
    query: &HashMap<String, String>,
) -> Result<(Vec<T>, Option<String>), ApiError> {
    let max: usize = match query.get("MaxItems") {
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
    let start: usize = match query.get("Marker") {
        Some(m) => m.parse().map_err(|_| {
            ApiError::InvalidParameter(format!(
                "Marker {m:?} did not come from this API; pass NextMarker as given"
            ))
        })?,
        None => 0,
    };
    let total = items.len();
    let page: Vec<T> = items.into_iter().skip(start).take(max).collect();
    let next = (start + page.len() < total).then(|| (start + page.len()).to_string());
    Ok((page, next))
}

/// A list call's answer: `{key: items}`, with `NextMarker` when there is more.
pub(crate) fn list_response<T: serde::Serialize>(
    key: &str,
    items: Vec<T>,
    next: Option<String>,
) -> Response {
    let mut body = serde_json::Map::new();
    body.insert(
        key.to_owned(),
        serde_json::to_value(items).unwrap_or_default(),
    );
    if let Some(next) = next {
        body.insert("NextMarker".to_owned(), next.into());
    }
    Json(serde_json::Value::Object(body)).into_response()
}

pub async fn create(State(state): State<AppState>, body: Body) -> Result<Response, ApiError> {
    let body = control_body(body).await?;
    let input: CreateFunctionIn = model::parse(&body)?;
    model::refuse_unsupported(
        input.package_type.as_deref(),
        input.architectures.as_deref(),
    )?;
    let spec = input.spec();
    let publish = input.publish.unwrap_or(false);
    let zip = model::decode_zip(
        input.code.zip_file.as_deref(),
        input.code.s3_bucket.is_some(),
    )?;
    let tags = input.tags.clone();
    let record = blocking(&state.registry, move |r| {
        let record = r.create(spec, &zip, publish)?;
        if let Some(tags) = tags {
            r.change_tags(&record.spec.name, model::parse_tags(tags)?, &[])?;
        }
        Ok(record)
    })
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(configuration(&state.registry, &record, None)),
    )
        .into_response())
}

pub async fn get_configuration(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let reference = function_ref(&state, &name, query.get("Qualifier").map(String::as_str))?;
    let qualifier = reference.qualifier.clone();
    let record = blocking(&state.registry, move |r| {
        r.get(&reference.name, reference.qualifier.as_ref())
    })
    .await?;
    Ok(Json(configuration(&state.registry, &record, qualifier.as_ref())).into_response())
}

pub async fn get(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let reference = function_ref(&state, &name, query.get("Qualifier").map(String::as_str))?;
    let qualifier = reference.qualifier.clone();
    let (record, tags) = blocking(&state.registry, move |r| {
        let record = r.get(&reference.name, reference.qualifier.as_ref())?;
        let tags = r.tags(&reference.name)?;
        Ok((record, tags))
    })
    .await?;
    let host = headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1:9000");
    let mut body = serde_json::json!({
        "Configuration": configuration(&state.registry, &record, qualifier.as_ref()),
        "Code": {
            "RepositoryType": "S3",
            "Location": format!("http://{host}/ember/v1/functions/{}/code", record.spec.name),
        },
        "Tags": tags,
    });
    if let Some(reserved) = state.registry.dispatcher().reserved(&record.spec.name) {
        body["Concurrency"] = serde_json::json!({ "ReservedConcurrentExecutions": reserved });
    }
    Ok(Json(body).into_response())
}

pub async fn list(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let records = blocking(&state.registry, |r| r.list()).await?;
    let (page, next) = page(records, &query)?;
    let functions: Vec<_> = page
        .iter()
        .map(|r| configuration(&state.registry, r, None))
        .collect();
    Ok(list_response("Functions", functions, next))
}

pub async fn update_code(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let name = unqualified(&state, &name)?;
    let body = control_body(body).await?;
    let input: UpdateCodeIn = model::parse(&body)?;
    model::refuse_unsupported(None, input.architectures.as_deref())?;
    let zip = model::decode_zip(input.zip_file.as_deref(), input.s3_bucket.is_some())?;
    let revision = input.revision_id.clone();
    let publish = input.publish.unwrap_or(false);
    if input.dry_run == Some(true) {
        let record = blocking(&state.registry, move |r| r.get(&name, None)).await?;
        return Ok(Json(configuration(&state.registry, &record, None)).into_response());
    }
    let record = blocking(&state.registry, move |r| {
        r.update_code(&name, &zip, revision.as_deref(), publish)
    })
    .await?;
    Ok(Json(configuration(&state.registry, &record, None)).into_response())
}

pub async fn update_configuration(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let name = unqualified(&state, &name)?;
    let body = control_body(body).await?;
    let input: UpdateConfigIn = model::parse(&body)?;
    let update = input.update();
    let revision = input.revision_id.clone();
    let record = blocking(&state.registry, move |r| {
        r.update_config(&name, update, revision.as_deref())
    })
    .await?;
    Ok(Json(configuration(&state.registry, &record, None)).into_response())
}

pub async fn delete(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let reference = function_ref(&state, &name, query.get("Qualifier").map(String::as_str))?;
    blocking(&state.registry, move |r| {
        r.delete(&reference.name, reference.qualifier.as_ref())
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
