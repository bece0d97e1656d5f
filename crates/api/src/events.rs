//! Asynchronous invocation settings: `Put/Get/Update/Delete/ListFunctionEventInvokeConfig(s)`
//! at `/2019-09-25/functions/{name}/event-invoke-config`.

use std::collections::HashMap;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use ember_events::retry::{DEFAULT_MAX_AGE, DEFAULT_RETRIES};
use ember_store::EventInvokeConfig;
use serde::{Deserialize, Serialize};

use crate::functions::{blocking, control_body, list_response, page, unqualified};
use crate::{ApiError, AppState, Registry};

#[derive(Deserialize, Serialize, Default, Clone)]
#[serde(rename_all = "PascalCase")]
struct Target {
    #[serde(skip_serializing_if = "Option::is_none")]
    destination: Option<String>,
}

#[derive(Deserialize, Serialize, Default, Clone)]
#[serde(rename_all = "PascalCase")]
struct Destinations {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    on_success: Option<Target>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    on_failure: Option<Target>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ConfigIn {
    maximum_retry_attempts: Option<i64>,
    maximum_event_age_in_seconds: Option<i64>,
    destination_config: Option<Destinations>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ConfigOut {
    /// Epoch seconds, as Lambda reports it here.
    last_modified: f64,
    function_arn: String,
    maximum_retry_attempts: u32,
    maximum_event_age_in_seconds: u32,
    destination_config: Destinations,
}

fn config_out(registry: &Registry, c: &EventInvokeConfig) -> ConfigOut {
    let target = |d: &Option<String>| Target {
        destination: d.clone(),
    };
    ConfigOut {
        last_modified: c.last_modified_ms as f64 / 1000.0,
        function_arn: registry.arn(&c.function, Some(&c.qualifier)),
        maximum_retry_attempts: c.max_retry_attempts,
        maximum_event_age_in_seconds: c.max_event_age_s,
        destination_config: Destinations {
            on_success: c.on_success.as_ref().map(|_| target(&c.on_success)),
            on_failure: c.on_failure.as_ref().map(|_| target(&c.on_failure)),
        },
    }
}

fn qualifier(query: &HashMap<String, String>) -> String {
    query
        .get("Qualifier")
        .cloned()
        .unwrap_or_else(|| "$LATEST".into())
}

/// Applies `input` over `base` (Update) or over the defaults (Put), checking the ranges.
fn merged(base: EventInvokeConfig, input: ConfigIn) -> Result<EventInvokeConfig, ApiError> {
    let retries = match input.maximum_retry_attempts {
        Some(n) if (0..=2).contains(&n) => n as u32,
        Some(n) => {
            return Err(ApiError::InvalidParameter(format!(
                "MaximumRetryAttempts must be between 0 and 2 (got {n})"
            )));
        }
        None => base.max_retry_attempts,
    };
    let age = match input.maximum_event_age_in_seconds {
        Some(n) if (60..=21_600).contains(&n) => n as u32,
        Some(n) => {
            return Err(ApiError::InvalidParameter(format!(
                "MaximumEventAgeInSeconds must be between 60 and 21600 (got {n})"
            )));
        }
        None => base.max_event_age_s,
    };
    let (on_success, on_failure) = match input.destination_config {
        Some(d) => (
            d.on_success
                .and_then(|t| t.destination)
                .filter(|d| !d.is_empty()),
            d.on_failure
                .and_then(|t| t.destination)
                .filter(|d| !d.is_empty()),
        ),
        None => (base.on_success, base.on_failure),
    };
    Ok(EventInvokeConfig {
        max_retry_attempts: retries,
        max_event_age_s: age,
        on_success,
        on_failure,
        last_modified_ms: ember_events::now_ms(),
        ..base
    })
}

async fn store(
    state: AppState,
    name: String,
    query: HashMap<String, String>,
    body: Body,
    update: bool,
) -> Result<Response, ApiError> {
    let name = unqualified(&state, &name)?;
    let qualifier = qualifier(&query);
    let input: ConfigIn = crate::model::parse(&control_body(body).await?)?;
    let config = blocking(&state.registry, move |r| {
        let defaults = EventInvokeConfig {
            function: name.clone(),
            qualifier: qualifier.clone(),
            max_retry_attempts: DEFAULT_RETRIES,
            max_event_age_s: DEFAULT_MAX_AGE.as_secs() as u32,
            on_success: None,
            on_failure: None,
            last_modified_ms: 0,
        };
        let base = if update {
            r.event_invoke_config(&name, &qualifier)?
        } else {
            defaults
        };
        let config = r.put_event_invoke_config(merged(base, input)?)?;
        Ok(config_out(r, &config))
    })
    .await?;
    Ok(Json(config).into_response())
}

/// `PUT …/event-invoke-config`: replaces the settings (what is not given is the default).
pub async fn put(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    body: Body,
) -> Result<Response, ApiError> {
    store(state, name, query, body, false).await
}

/// `POST …/event-invoke-config`: changes only what is given.
pub async fn update(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    body: Body,
) -> Result<Response, ApiError> {
    store(state, name, query, body, true).await
}

pub async fn get(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let name = unqualified(&state, &name)?;
    let qualifier = qualifier(&query);
    let config = blocking(&state.registry, move |r| {
        let c = r.event_invoke_config(&name, &qualifier)?;
        Ok(config_out(r, &c))
    })
    .await?;
    Ok(Json(config).into_response())
}

pub async fn delete(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let name = unqualified(&state, &name)?;
    let qualifier = qualifier(&query);
    blocking(&state.registry, move |r| {
        r.delete_event_invoke_config(&name, &qualifier)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET …/event-invoke-config/list`.
pub async fn list(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let name = unqualified(&state, &name)?;
    let configs = blocking(&state.registry, move |r| {
        Ok(r.event_invoke_configs(&name)?
            .iter()
            .map(|c| config_out(r, c))
            .collect::<Vec<_>>())
    })
    .await?;
    let (configs, next) = page(configs, &query)?;
    Ok(list_response("FunctionEventInvokeConfigs", configs, next))
}
