//! Layers: PublishLayerVersion, GetLayerVersion, ListLayerVersions, ListLayers,
//! DeleteLayerVersion.

use std::collections::{BTreeMap, HashMap};

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use ember_store::LayerRecord;

use crate::AppState;
use crate::error::ApiError;
use crate::functions::{blocking, control_body, list_response, page};
use crate::model::{self, PublishLayerIn, layer_version};

fn document(state: &AppState, headers: &HeaderMap, layer: &LayerRecord) -> serde_json::Value {
    let host = headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1:9000");
    layer_version(
        layer,
        state.registry.layer_arn(&layer.name, None),
        state.registry.layer_arn(&layer.name, Some(layer.version)),
        format!("http://{host}/ember/v1/artifacts/{}.zip", layer.code_sha256),
    )
}

pub async fn publish(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let input: PublishLayerIn = model::parse(&control_body(body).await?)?;
    model::refuse_unsupported(None, input.compatible_architectures.as_deref())?;
    let zip = model::decode_zip(
        input.content.zip_file.as_deref(),
        input.content.s3_bucket.is_some(),
    )?;
    let description = input.description.unwrap_or_default();
    let runtimes = input.compatible_runtimes.unwrap_or_default();
    let license = input.license_info.unwrap_or_default();
    let layer = blocking(&state.registry, move |r| {
        r.publish_layer(&name, &zip, description, runtimes, license)
    })
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(document(&state, &headers, &layer)),
    )
        .into_response())
}

fn version_number(text: &str) -> Result<u32, ApiError> {
    text.parse().ok().filter(|v| *v > 0).ok_or_else(|| {
        ApiError::InvalidParameter(format!(
            "layer version must be a positive number (got {text:?})"
        ))
    })
}

pub async fn get(
    State(state): State<AppState>,
    Path((name, version)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let version = version_number(&version)?;
    let layer = blocking(&state.registry, move |r| r.get_layer(&name, version)).await?;
    Ok(Json(document(&state, &headers, &layer)).into_response())
}

pub async fn list_versions(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let mut layers = blocking(&state.registry, move |r| r.list_layer_versions(&name)).await?;
    // Newest first, as Lambda lists them.
    layers.reverse();
    let (page, next) = page(layers, &query)?;
    let versions: Vec<_> = page.iter().map(|l| document(&state, &headers, l)).collect();
    Ok(list_response("LayerVersions", versions, next))
}

pub async fn list(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let layers = blocking(&state.registry, |r| r.list_layer_versions("*")).await?;
    // Each layer with its newest live version.
    let mut latest: BTreeMap<String, LayerRecord> = BTreeMap::new();
    for layer in layers {
        latest.insert(layer.name.clone(), layer);
    }
    let (page, next) = page(latest.into_values().collect(), &query)?;
    let listed: Vec<_> = page
        .iter()
        .map(|l| {
            serde_json::json!({
                "LayerName": l.name,
                "LayerArn": state.registry.layer_arn(&l.name, None),
                "LatestMatchingVersion": document(&state, &headers, l),
            })
        })
        .collect();
    Ok(list_response("Layers", listed, next))
}

pub async fn delete(
    State(state): State<AppState>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let version = version_number(&version)?;
    blocking(&state.registry, move |r| r.delete_layer(&name, version)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
