//! Tags (TagResource, UntagResource, ListTags) and GetAccountSettings.

use std::collections::HashMap;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use ember_core::limits;

use crate::AppState;
use crate::error::ApiError;
use crate::functions::{blocking, control_body, unqualified};
use crate::model;

pub async fn list_tags(
    State(state): State<AppState>,
    Path(arn): Path<String>,
) -> Result<Response, ApiError> {
    let function = unqualified(&state, &arn)?;
    let tags = blocking(&state.registry, move |r| r.tags(&function)).await?;
    Ok(Json(serde_json::json!({ "Tags": tags })).into_response())
}

pub async fn tag(
    State(state): State<AppState>,
    Path(arn): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let function = unqualified(&state, &arn)?;
    let input: HashMap<String, serde_json::Value> = model::parse(&control_body(body).await?)?;
    let tags = input
        .get("Tags")
        .cloned()
        .ok_or_else(|| ApiError::InvalidParameter("Tags is required".into()))
        .and_then(model::parse_tags)?;
    blocking(&state.registry, move |r| {
        r.change_tags(&function, tags, &[])
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn untag(
    State(state): State<AppState>,
    Path(arn): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let function = unqualified(&state, &arn)?;
    // `tagKeys` repeats: ?tagKeys=a&tagKeys=b.
    let keys: Vec<String> = form_urlencoded::parse(query.as_deref().unwrap_or_default().as_bytes())
        .filter(|(k, _)| k == "tagKeys")
        .map(|(_, v)| v.into_owned())
        .collect();
    blocking(&state.registry, move |r| {
        r.change_tags(&function, Default::default(), &keys)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn account_settings(State(state): State<AppState>) -> Result<Response, ApiError> {
    let (functions, code_bytes) = blocking(&state.registry, |r| r.usage()).await?;
    let config = state.registry.dispatcher().config();
    let body = serde_json::json!({
        "AccountLimit": {
            "TotalCodeSize": 80u64 * 1024 * 1024 * 1024,
            "CodeSizeUnzipped": limits::UNZIPPED_BYTES,
            "CodeSizeZipped": limits::ZIP_BYTES,
            "ConcurrentExecutions": config.admission.account_limit,
            "UnreservedConcurrentExecutions": state.registry.dispatcher().unreserved_limit(),
        },
        "AccountUsage": {
            "TotalCodeSize": code_bytes,
            "FunctionCount": functions,
        },
    });
    Ok(Json(body).into_response())
}
