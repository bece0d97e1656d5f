//! PublishVersion, ListVersionsByFunction, and the alias calls (CreateAlias, GetAlias,
//! UpdateAlias, DeleteAlias, ListAliases).

use std::collections::HashMap;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;

use crate::AppState;
use crate::error::ApiError;
use crate::functions::{blocking, configuration, control_body, list_response, page, unqualified};
use crate::model::{self, AliasIn, PublishVersionIn, alias_configuration};

pub async fn publish(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let name = unqualified(&state, &name)?;
    let body = control_body(body).await?;
    let input: PublishVersionIn = if body.is_empty() {
        PublishVersionIn::default()
    } else {
        model::parse(&body)?
    };
    let record = blocking(&state.registry, move |r| {
        if let Some(expected) = &input.code_sha256 {
            let latest = r.get(&name, None)?;
            let actual = hex::decode(&latest.code_sha256).map(|raw| BASE64.encode(raw)).unwrap_or_default();
            if *expected != actual {
                return Err(ApiError::InvalidParameter(format!(
                    "CodeSha256 {expected} does not match the code of $LATEST ({actual}); update the code or drop CodeSha256"
                )));
            }
        }
        r.publish(&name, input.description, input.revision_id.as_deref())
    })
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(configuration(&state.registry, &record, None)),
    )
        .into_response())
}

pub async fn list_versions(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let name = unqualified(&state, &name)?;
    let records = blocking(&state.registry, move |r| r.list_versions(&name)).await?;
    let (page, next) = page(records, &query)?;
    let versions: Vec<_> = page
        .iter()
        .map(|r| {
            // In this list $LATEST is reported under its qualified ARN, as Lambda does.
            let latest = ember_core::arn::Qualifier::Latest;
            configuration(&state.registry, r, r.version.is_none().then_some(&latest))
        })
        .collect();
    Ok(list_response("Versions", versions, next))
}

fn alias_body(state: &AppState, alias: &ember_store::AliasRecord) -> serde_json::Value {
    alias_configuration(
        alias,
        state.registry.arn(&alias.function, Some(&alias.name)),
    )
}

pub async fn create_alias(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let function = unqualified(&state, &name)?;
    let input: AliasIn = model::parse(&control_body(body).await?)?;
    let alias_name = input
        .name
        .clone()
        .ok_or_else(|| ApiError::InvalidParameter("Name is required".into()))?;
    let change = input.change()?;
    let alias = blocking(&state.registry, move |r| {
        r.create_alias(&function, &alias_name, change)
    })
    .await?;
    Ok((StatusCode::CREATED, Json(alias_body(&state, &alias))).into_response())
}

pub async fn get_alias(
    State(state): State<AppState>,
    Path((name, alias)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let function = unqualified(&state, &name)?;
    let alias = blocking(&state.registry, move |r| r.get_alias(&function, &alias)).await?;
    Ok(Json(alias_body(&state, &alias)).into_response())
}

pub async fn list_aliases(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let function = unqualified(&state, &name)?;
    let version = query.get("FunctionVersion").cloned();
    let aliases = blocking(&state.registry, move |r| r.list_aliases(&function)).await?;
    let aliases: Vec<_> = aliases
        .into_iter()
        .filter(|a| version.as_ref().is_none_or(|v| a.version == *v))
        .collect();
    let (page, next) = page(aliases, &query)?;
    Ok(list_response(
        "Aliases",
        page.iter()
            .map(|a| alias_body(&state, a))
            .collect::<Vec<_>>(),
        next,
    ))
}

pub async fn update_alias(
    State(state): State<AppState>,
    Path((name, alias)): Path<(String, String)>,
    body: Body,
) -> Result<Response, ApiError> {
    let function = unqualified(&state, &name)?;
    let input: AliasIn = model::parse(&control_body(body).await?)?;
    let change = input.change()?;
    let revision = input.revision_id.clone();
    let alias = blocking(&state.registry, move |r| {
        r.update_alias(&function, &alias, change, revision.as_deref())
    })
    .await?;
    Ok(Json(alias_body(&state, &alias)).into_response())
}

pub async fn delete_alias(
    State(state): State<AppState>,
    Path((name, alias)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let function = unqualified(&state, &name)?;
    blocking(&state.registry, move |r| r.delete_alias(&function, &alias)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
