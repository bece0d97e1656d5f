//! `POST /` with `X-Amz-Target: <Service>.<Operation>`: the services spoken over AWS's
//! JSON protocol, EventBridge (`AWSEvents.*`, JSON 1.1, in [`crate::rules`]) and SQS
//! (`AmazonSQS.*`, JSON 1.0, in [`crate::sqs`]).

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use crate::functions::{blocking, control_body};
use crate::{ApiError, AppState};

fn answer(out: Value, content_type: &'static str) -> Response {
    let mut response = Json(out).into_response();
    response
        .headers_mut()
        .insert("content-type", HeaderValue::from_static(content_type));
    response
}

pub async fn serve(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let target = headers
        .get("x-amz-target")
        .and_then(|t| t.to_str().ok())
        .unwrap_or("")
        .to_owned();
    if let Some(op) = target.strip_prefix("AmazonSQS.").map(str::to_owned) {
        let body = control_body(body).await?;
        let outcome = blocking(&state.registry, move |r| {
            crate::sqs::operation(r, &headers, &op, &body)
        })
        .await?;
        let out = match outcome {
            Ok(out) => out,
            // A receive that found nothing waits (long polling) off the blocking pool.
            Err(receive) => {
                crate::sqs::receive(std::sync::Arc::clone(&state.registry), receive).await?
            }
        };
        return Ok(answer(out, "application/x-amz-json-1.0"));
    }
    if let Some(op) = target.strip_prefix("AWSEvents.").map(str::to_owned) {
        let body = control_body(body).await?;
        let events = state.events.clone();
        let out = blocking(&state.registry, move |r| {
            crate::rules::operation(r, &events, &op, &body)
        })
        .await?;
        return Ok(answer(out, "application/x-amz-json-1.1"));
    }
    Err(ApiError::UnknownOperation {
        method: "POST".into(),
        path: format!("/ (X-Amz-Target: {target:?})"),
    })
}
