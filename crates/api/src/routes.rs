//! HTTP routes: `METHOD /path` keys, as API Gateway HTTP APIs write them, each sending
//! matching requests to a function, served under `http://HOST/http/…`.
//!
//! - `GET /orders/{id}`: a literal path with named parameters (one segment each);
//! - `ANY /files/{proxy+}`: a greedy last parameter (one or more segments);
//! - `$default`: whatever no other route matches.
//!
//! The most specific route wins: a literal segment over a parameter over a greedy one,
//! compared from the left, then a method over `ANY`. The function gets the HTTP API 2.0
//! payload with this `routeKey` and the `pathParameters`; its answer is mapped as for
//! function URLs. Managed at `/ember/v1/routes`.

use std::collections::{BTreeMap, HashMap};

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use ember_store::RouteRecord;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::functions::{blocking, control_body};
use crate::{ApiError, AppState, Registry};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param(String),
    Greedy(String),
}

/// A parsed route key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RouteKey {
    /// `None` for `ANY`.
    method: Option<String>,
    /// `None` for `$default`.
    segments: Option<Vec<Segment>>,
}

impl RouteKey {
    pub fn parse(text: &str) -> Result<RouteKey, String> {
        if text == "$default" {
            return Ok(RouteKey {
                method: None,
                segments: None,
            });
        }
        let usage = "a route key is \"METHOD /path\" (e.g. \"GET /orders/{id}\", \"ANY /files/{proxy+}\") or $default";
        let (method, path) = text
            .split_once(' ')
            .ok_or_else(|| format!("{text:?}: {usage}"))?;
        let method = match method {
            "ANY" => None,
            "GET" | "POST" | "PUT" | "PATCH" | "DELETE" | "HEAD" | "OPTIONS" => {
                Some(method.to_owned())
            }
            other => return Err(format!("{other:?} is not an HTTP method (or ANY); {usage}")),
        };
        let rest = path
            .strip_prefix('/')
            .ok_or_else(|| format!("{path:?} must start with /; {usage}"))?;
        let mut segments = Vec::new();
        let parts: Vec<&str> = if rest.is_empty() {
            Vec::new()
        } else {
            rest.split('/').collect()
        };
        for (i, part) in parts.iter().enumerate() {
            let segment = match part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                Some(name) => match name.strip_suffix('+') {
                    Some(name) if i + 1 == parts.len() && !name.is_empty() => {
                        Segment::Greedy(name.to_owned())
                    }
                    Some(_) => {
                        return Err(format!(
                            "{path:?}: a greedy {{name+}} must be the last segment"
                        ));
                    }
                    None if !name.is_empty() => Segment::Param(name.to_owned()),
                    None => return Err(format!("{path:?}: a parameter needs a name")),
                },
                None if !part.is_empty() && !part.contains(['{', '}']) => {
                    Segment::Literal((*part).to_owned())
                }
                None => return Err(format!("{path:?}: empty or malformed segment {part:?}")),
            };
            segments.push(segment);
        }
        Ok(RouteKey {
            method,
            segments: Some(segments),
        })
    }

    /// The parameters if `method` and `path` (e.g. `/orders/7`) match.
    fn matches(&self, method: &str, path: &str) -> Option<BTreeMap<String, String>> {
        if self.method.as_deref().is_some_and(|m| m != method) {
            return None;
        }
        let Some(segments) = &self.segments else {
            return Some(BTreeMap::new());
        };
        let parts: Vec<&str> = path
            .trim_start_matches('/')
            .split('/')
            .filter(|p| !p.is_empty())
            .collect();
        let mut params = BTreeMap::new();
        for (i, segment) in segments.iter().enumerate() {
            match segment {
                Segment::Greedy(name) => {
                    if i >= parts.len() {
                        return None;
                    }
                    params.insert(name.clone(), parts[i..].join("/"));
                    return Some(params);
                }
                Segment::Literal(l) => {
                    if parts.get(i) != Some(&l.as_str()) {
                        return None;
                    }
                }
                Segment::Param(name) => {
                    let value = parts.get(i)?;
                    params.insert(name.clone(), (*value).to_owned());
                }
            }
        }
        (parts.len() == segments.len()).then_some(params)
    }

    /// Orders routes by specificity: greater is more specific.
    fn rank(&self) -> (u8, Vec<u8>, u8) {
        let segments = match &self.segments {
            None => return (0, Vec::new(), 0),
            Some(s) => s
                .iter()
                .map(|s| match s {
                    Segment::Literal(_) => 3,
                    Segment::Param(_) => 2,
                    Segment::Greedy(_) => 1,
                })
                .collect(),
        };
        (1, segments, u8::from(self.method.is_some()))
    }
}

/// The route that serves `method path`, and its path parameters.
pub(crate) fn find<'a>(
    routes: &'a [(RouteKey, RouteRecord)],
    method: &str,
    path: &str,
) -> Option<(&'a RouteRecord, BTreeMap<String, String>)> {
    routes
        .iter()
        .filter_map(|(key, record)| Some((key, record, key.matches(method, path)?)))
        .max_by(|a, b| a.0.rank().cmp(&b.0.rank()))
        .map(|(_, record, params)| (record, params))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RouteIn {
    route_key: String,
    function: String,
    qualifier: Option<String>,
    auth_type: Option<String>,
}

fn route_out(r: &RouteRecord) -> Value {
    json!({
        "RouteId": r.id,
        "RouteKey": r.route_key,
        "Function": r.function,
        "Qualifier": r.qualifier,
        "AuthType": r.auth_type,
        "CreatedDate": r.created,
    })
}

/// `POST /ember/v1/routes`: 201.
pub async fn create(State(state): State<AppState>, body: Body) -> Result<Response, ApiError> {
    let input: RouteIn = crate::model::parse(&control_body(body).await?)?;
    let route = blocking(&state.registry, move |r| {
        RouteKey::parse(&input.route_key).map_err(ApiError::InvalidParameter)?;
        let auth_type = match input.auth_type.as_deref() {
            None | Some("NONE") => "NONE",
            Some("AWS_IAM") => "AWS_IAM",
            Some(other) => {
                return Err(ApiError::InvalidParameter(format!(
                    "AuthType must be NONE or AWS_IAM (got {other:?})"
                )));
            }
        };
        r.add_route(RouteRecord {
            id: uuid::Uuid::new_v4().simple().to_string()[..8].to_owned(),
            route_key: input.route_key,
            function: input.function,
            qualifier: input.qualifier,
            auth_type: auth_type.to_owned(),
            created: ember_core::time::lambda_timestamp(std::time::SystemTime::now()),
        })
    })
    .await?;
    Ok((StatusCode::CREATED, Json(route_out(&route))).into_response())
}

/// `GET /ember/v1/routes`.
pub async fn list(State(state): State<AppState>) -> Result<Response, ApiError> {
    let routes = blocking(&state.registry, |r| Ok(r.store().routes()?)).await?;
    let items: Vec<Value> = routes.iter().map(route_out).collect();
    Ok(Json(json!({ "Routes": items })).into_response())
}

/// `DELETE /ember/v1/routes/{id}`.
pub async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    blocking(&state.registry, move |r| r.delete_route(&id)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `ANY /http/{*path}`: the route that matches calls its function.
pub async fn serve(
    State(state): State<AppState>,
    params: Option<Path<HashMap<String, String>>>,
    request: Request,
) -> Response {
    let path = format!(
        "/{}",
        params
            .as_ref()
            .and_then(|p| p.get("path").cloned())
            .unwrap_or_default()
    );
    let method = request.method().as_str().to_owned();
    let found = state.registry.route_for(&method, &path);
    let Some((route, parameters)) = found else {
        return crate::urls::message(StatusCode::NOT_FOUND, "Not Found");
    };
    let target = crate::urls::Target {
        function: &route.function,
        qualifier: route.qualifier.as_deref(),
        auth_type: &route.auth_type,
        route_key: &route.route_key,
        api_id: &route.id,
        raw_path: &path,
        path_parameters: parameters,
    };
    let source_ip = crate::urls::source_ip(&request);
    crate::urls::call(&state, target, request, source_ip).await
}

impl Registry {
    pub fn add_route(&self, route: RouteRecord) -> Result<RouteRecord, ApiError> {
        let _guard = self.lock_changes();
        let qualifier = route
            .qualifier
            .as_deref()
            .map(ember_core::arn::Qualifier::parse)
            .transpose()?;
        self.get(&route.function, qualifier.as_ref())?;
        if !self.store().add_route(&route)? {
            return Err(ApiError::Conflict(format!(
                "a route {:?} exists; delete it first",
                route.route_key
            )));
        }
        self.reload_routes()?;
        Ok(route)
    }

    pub fn delete_route(&self, id: &str) -> Result<(), ApiError> {
        let _guard = self.lock_changes();
        if !self.store().delete_route(id)? {
            return Err(ApiError::NotFound(format!("no route {id}")));
        }
        self.reload_routes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(keys: &[&str]) -> Vec<(RouteKey, RouteRecord)> {
        keys.iter()
            .map(|k| {
                (
                    RouteKey::parse(k).unwrap(),
                    RouteRecord {
                        id: (*k).into(),
                        route_key: (*k).into(),
                        function: "f".into(),
                        qualifier: None,
                        auth_type: "NONE".into(),
                        created: String::new(),
                    },
                )
            })
            .collect()
    }

    fn route(
        t: &[(RouteKey, RouteRecord)],
        method: &str,
        path: &str,
    ) -> Option<(String, Vec<(String, String)>)> {
        find(t, method, path).map(|(r, p)| (r.route_key.clone(), p.into_iter().collect()))
    }

    #[test]
    fn the_most_specific_route_wins() {
        let t = table(&[
            "GET /orders/{id}",
            "GET /orders/latest",
            "ANY /orders/{id}",
            "ANY /files/{proxy+}",
            "POST /orders",
            "$default",
        ]);
        let p = |k: &str, v: &str| (k.to_owned(), v.to_owned());
        assert_eq!(
            route(&t, "GET", "/orders/7"),
            Some(("GET /orders/{id}".into(), vec![p("id", "7")]))
        );
        assert_eq!(
            route(&t, "GET", "/orders/latest"),
            Some(("GET /orders/latest".into(), vec![]))
        );
        assert_eq!(
            route(&t, "DELETE", "/orders/7"),
            Some(("ANY /orders/{id}".into(), vec![p("id", "7")]))
        );
        assert_eq!(
            route(&t, "GET", "/files/a/b/c.txt"),
            Some(("ANY /files/{proxy+}".into(), vec![p("proxy", "a/b/c.txt")]))
        );
        assert_eq!(
            route(&t, "POST", "/orders"),
            Some(("POST /orders".into(), vec![]))
        );
        assert_eq!(
            route(&t, "GET", "/orders"),
            Some(("$default".into(), vec![]))
        );
        assert_eq!(
            route(&t, "GET", "/files"),
            Some(("$default".into(), vec![]))
        );
        let strict = table(&["GET /a/{b}"]);
        assert_eq!(route(&strict, "GET", "/a/b/c"), None);
    }

    #[test]
    fn bad_route_keys_are_refused() {
        for bad in [
            "/orders",
            "FETCH /x",
            "GET orders",
            "GET /a/{}",
            "GET /{p+}/x",
            "GET /a//b",
        ] {
            assert!(RouteKey::parse(bad).is_err(), "{bad}");
        }
    }
}
