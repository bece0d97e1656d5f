//! Invoke: `POST /2015-03-31/functions/{name}/invocations`.

use std::collections::HashMap;
use std::fmt::Write as _;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use ember_core::arn::FunctionRef;
use ember_core::limits::SYNC_PAYLOAD_BYTES;
use ember_dispatch::{InvokeRequest, Timing};
use ember_events::EVENT_PAYLOAD_BYTES;

use crate::error::ApiError;
use crate::{AppState, read_body};

/// Largest decoded `X-Amz-Client-Context`.
const CLIENT_CONTEXT_BYTES: usize = 3583;

pub async fn invoke(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    let reference =
        crate::functions::function_ref(&state, &name, query.get("Qualifier").map(String::as_str))?;
    let qualifier_text = reference.qualifier.as_ref().map(|q| q.to_string());
    let invoked_arn = state
        .registry
        .arn(&reference.name, qualifier_text.as_deref());
    let not_found = || ApiError::FunctionNotFound(invoked_arn.clone());
    let dispatcher = state.registry.dispatcher();
    let (dry_run, event) = match header("x-amz-invocation-type").unwrap_or("RequestResponse") {
        "RequestResponse" => (false, false),
        "DryRun" => (true, false),
        "Event" => (false, true),
        other => {
            return Err(ApiError::InvalidParameter(format!(
                "InvocationType must be RequestResponse, Event or DryRun (got {other:?})"
            )));
        }
    };
    let limit = if event {
        EVENT_PAYLOAD_BYTES
    } else {
        SYNC_PAYLOAD_BYTES
    };
    let payload = read_body(body, limit)
        .await
        .map_err(|_| ApiError::RequestTooLarge(limit))?;
    if !payload.is_empty() && serde_json::from_slice::<serde::de::IgnoredAny>(&payload).is_err() {
        return Err(ApiError::InvalidRequestContent(
            "Could not parse request body into json: the payload must be a JSON document".into(),
        ));
    }
    let client_context = header("x-amz-client-context")
        .map(client_context)
        .transpose()?;
    if event {
        // Accepted once it is in the store: the 202 promises it will run.
        let FunctionRef { name, qualifier } = reference;
        let function = name.clone();
        let qualifier = crate::functions::blocking(&state.registry, move |r| {
            r.get(&function, qualifier.as_ref())?;
            Ok(qualifier.map(|q| q.to_string()))
        })
        .await?;
        let request_id = state
            .events
            .enqueue(&name, qualifier.as_deref(), &payload)
            .await
            .map_err(|e| ApiError::Service(ember_core::error_chain(&e)))?;
        let mut response = StatusCode::ACCEPTED.into_response();
        if let Ok(id) = HeaderValue::from_str(&request_id) {
            response.headers_mut().insert("x-amzn-requestid", id);
        }
        return Ok(response);
    }
    if dry_run {
        let FunctionRef { name, qualifier } = reference;
        crate::functions::blocking(&state.registry, move |r| r.get(&name, qualifier.as_ref()))
            .await?;
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let tail_log = header("x-amz-log-type") == Some("Tail");
    let result = dispatcher
        .invoke(
            &reference.name,
            reference.qualifier.as_ref(),
            InvokeRequest {
                payload,
                tail_log,
                client_context,
                invoked_arn: Some(invoked_arn.clone()),
                ..Default::default()
            },
        )
        .await
        .map_err(|e| match e {
            ember_dispatch::DispatchError::FunctionNotFound(_) => not_found(),
            other => other.into(),
        })?;

    let mut response = Response::new(Body::from(result.body));
    let h = response.headers_mut();
    h.insert("content-type", HeaderValue::from_static("application/json"));
    if let Ok(version) = HeaderValue::from_str(&result.executed_version) {
        h.insert("x-amz-executed-version", version);
    }
    if let Ok(id) = HeaderValue::from_str(&result.request_id) {
        h.insert("x-amzn-requestid", id);
    }
    if let Some(kind) = result.function_error {
        h.insert(
            "x-amz-function-error",
            HeaderValue::from_static(kind.as_str()),
        );
    }
    if let Some(tail) = result.log_tail
        && let Ok(v) = HeaderValue::from_str(&BASE64.encode(&tail))
    {
        h.insert("x-amz-log-result", v);
    }
    if let Ok(v) = HeaderValue::from_str(&server_timing(&result.timing)) {
        h.insert("server-timing", v);
    }
    Ok(response)
}

/// The `Server-Timing` header: where the call's time went inside Ember, in milliseconds,
/// stage by stage (a cold start's init split into sandbox, runtime and code).
fn server_timing(t: &Timing) -> String {
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
    let mut out = format!("placement;dur={:.3}", ms(t.placement));
    if let Some(init) = &t.init {
        let _ = write!(
            out,
            ", sandbox;dur={:.3}, runtime-init;dur={:.3}, code-init;dur={:.3}",
            ms(init.sandbox),
            ms(init.runtime),
            ms(init.code)
        );
    }
    let _ = write!(out, ", handler;dur={:.3}", ms(t.handler));
    out
}

/// Decodes `X-Amz-Client-Context` (base64 of JSON) into the compact JSON the runtime gets
/// as `Lambda-Runtime-Client-Context`. Compact JSON has no control characters, so it is
/// always a valid header value.
fn client_context(encoded: &str) -> Result<String, ApiError> {
    let invalid = || {
        ApiError::InvalidParameter("X-Amz-Client-Context must be base64 of a JSON document".into())
    };
    let decoded = BASE64.decode(encoded).map_err(|_| invalid())?;
    if decoded.len() > CLIENT_CONTEXT_BYTES {
        return Err(ApiError::InvalidParameter(format!(
            "X-Amz-Client-Context must decode to at most {CLIENT_CONTEXT_BYTES} bytes (got {})",
            decoded.len()
        )));
    }
    let value: serde_json::Value = serde_json::from_slice(&decoded).map_err(|_| invalid())?;
    Ok(value.to_string())
}
