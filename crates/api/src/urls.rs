//! Function URLs: `Create/Get/Update/Delete/ListFunctionUrlConfig(s)` at
//! `/2021-10-31/functions/{name}/url[s]`, and the URLs themselves.
//!
//! A function's URL is `http://HOST/url/NAME/` (`…/url/NAME:ALIAS/` for an alias), any
//! method and any path below it. The request becomes the API Gateway HTTP API payload
//! (format 2.0) and the function's answer becomes the response: a `statusCode`/`headers`/
//! `cookies`/`body`/`isBase64Encoded` document, or any other JSON value as a 200
//! `application/json` body. `AuthType` `NONE` lets anyone call; `AWS_IAM` requires a SigV4
//! signature (service `lambda`) by one of the server's access keys.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::time::SystemTime;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use ember_core::arn::Qualifier;
use ember_core::limits::SYNC_PAYLOAD_BYTES;
use ember_dispatch::{DispatchError, InvokeRequest};
use ember_store::UrlConfig;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::cors::Cors;
use crate::functions::{blocking, control_body, list_response, page, unqualified};
use crate::{ApiError, AppState, Registry};

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ConfigIn {
    auth_type: Option<String>,
    cors: Option<Value>,
    invoke_mode: Option<String>,
}

/// The path a URL configuration is served under: `NAME` or `NAME:ALIAS`.
pub(crate) fn url_id(function: &str, qualifier: &str) -> String {
    if qualifier == "$LATEST" {
        function.to_owned()
    } else {
        format!("{function}:{qualifier}")
    }
}

fn base_url(headers: &HeaderMap, id: &str) -> String {
    let host = headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1:9000");
    format!("http://{host}/url/{id}/")
}

fn config_out(registry: &Registry, headers: &HeaderMap, c: &UrlConfig) -> Value {
    let qualifier = (c.qualifier != "$LATEST").then_some(c.qualifier.as_str());
    let mut out = json!({
        "FunctionUrl": base_url(headers, &url_id(&c.function, &c.qualifier)),
        "FunctionArn": registry.arn(&c.function, qualifier),
        "AuthType": c.auth_type,
        "CreationTime": c.created,
        "LastModifiedTime": c.modified,
        "InvokeMode": "BUFFERED",
    });
    if let Some(cors) = c.cors.as_deref().and_then(Cors::load) {
        out["Cors"] = json!(cors);
    }
    out
}

fn qualifier(query: &HashMap<String, String>) -> Result<String, ApiError> {
    match query.get("Qualifier").map(String::as_str) {
        None | Some("$LATEST") => Ok("$LATEST".into()),
        Some(q) => match Qualifier::parse(q)? {
            Qualifier::Alias(a) => Ok(a),
            _ => Err(ApiError::InvalidParameter(format!(
                "a function URL's Qualifier is an alias or $LATEST, not a version (got {q})"
            ))),
        },
    }
}

/// A configuration's `AuthType` and stored `Cors`: what the request gives, else what
/// the configuration being updated has.
fn checked(
    input: ConfigIn,
    base: Option<&UrlConfig>,
) -> Result<(String, Option<String>), ApiError> {
    let cors = match input.cors {
        Some(doc) => Cors::parse(doc)?.stored(),
        None => base.and_then(|b| b.cors.clone()),
    };
    if let Some(mode) = input.invoke_mode.as_deref().filter(|m| *m != "BUFFERED") {
        return Err(ApiError::InvalidParameter(format!(
            "InvokeMode must be BUFFERED (got {mode:?}); responses are not streamed"
        )));
    }
    let auth_type = match input.auth_type.as_deref() {
        Some(a @ ("NONE" | "AWS_IAM")) => a.to_owned(),
        Some(other) => {
            return Err(ApiError::InvalidParameter(format!(
                "AuthType must be NONE or AWS_IAM (got {other:?})"
            )));
        }
        None => base.map(|b| b.auth_type.clone()).ok_or_else(|| {
            ApiError::InvalidParameter("AuthType is required (NONE or AWS_IAM)".into())
        })?,
    };
    Ok((auth_type, cors))
}

async fn store(
    state: AppState,
    name: String,
    query: HashMap<String, String>,
    headers: HeaderMap,
    body: Body,
    create: bool,
) -> Result<Response, ApiError> {
    let name = unqualified(&state, &name)?;
    let qualifier = qualifier(&query)?;
    let input: ConfigIn = crate::model::parse(&control_body(body).await?)?;
    let out = blocking(&state.registry, move |r| {
        let old = if create {
            None
        } else {
            Some(r.url(&name, &qualifier)?)
        };
        let (auth_type, cors) = checked(input, old.as_ref())?;
        let config = r.put_url(&name, &qualifier, auth_type, cors, create)?;
        Ok(config_out(r, &headers, &config))
    })
    .await?;
    let status = if create {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(out)).into_response())
}

/// `POST /2021-10-31/functions/{name}/url`: 201.
pub async fn create(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    store(state, name, query, headers, body, true).await
}

/// `PUT /2021-10-31/functions/{name}/url`.
pub async fn update(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    store(state, name, query, headers, body, false).await
}

pub async fn get(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let name = unqualified(&state, &name)?;
    let qualifier = qualifier(&query)?;
    let out = blocking(&state.registry, move |r| {
        let config = r.url(&name, &qualifier)?;
        Ok(config_out(r, &headers, &config))
    })
    .await?;
    Ok(Json(out).into_response())
}

pub async fn delete(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let name = unqualified(&state, &name)?;
    let qualifier = qualifier(&query)?;
    blocking(&state.registry, move |r| r.delete_url(&name, &qualifier)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /2021-10-31/functions/{name}/urls`.
pub async fn list(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let name = unqualified(&state, &name)?;
    let configs = blocking(&state.registry, move |r| {
        Ok(r.urls(&name)?
            .iter()
            .map(|c| config_out(r, &headers, c))
            .collect::<Vec<_>>())
    })
    .await?;
    let (configs, next) = page(configs, &query)?;
    Ok(list_response("FunctionUrlConfigs", configs, next))
}

/// Whether a body of this content type travels as text (else base64).
fn is_text(content_type: Option<&str>) -> bool {
    let Some(ct) = content_type else {
        return true;
    };
    let ct = ct.split(';').next().unwrap_or("").trim().as_bytes();
    let starts = |p: &str| ct.len() >= p.len() && ct[..p.len()].eq_ignore_ascii_case(p.as_bytes());
    let ends = |p: &str| {
        ct.len() >= p.len() && ct[ct.len() - p.len()..].eq_ignore_ascii_case(p.as_bytes())
    };
    starts("text/")
        || ends("+json")
        || ends("+xml")
        || [
            "application/json",
            "application/javascript",
            "application/xml",
            "application/x-www-form-urlencoded",
        ]
        .iter()
        .any(|t| ct.eq_ignore_ascii_case(t.as_bytes()))
}

/// `12/Mar/2020:19:03:58 +0000`, appended to `out`.
fn clf_time(t: SystemTime, out: &mut Vec<u8>) {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs() as i64;
    let (y, m, d) = ember_core::time::civil_from_days(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    // Digit by digit: the formatter's machinery cost more than the rest of the event.
    let two = |out: &mut Vec<u8>, n: i64| {
        out.extend_from_slice(&[b'0' + (n / 10) as u8, b'0' + (n % 10) as u8])
    };
    two(out, i64::from(d));
    out.push(b'/');
    out.extend_from_slice(MONTHS[(m - 1) as usize].as_bytes());
    out.push(b'/');
    if (1000..=9999).contains(&y) {
        two(out, y / 100);
        two(out, y % 100);
    } else {
        out.extend_from_slice(y.to_string().as_bytes());
    }
    out.push(b':');
    two(out, s / 3600);
    out.push(b':');
    two(out, s / 60 % 60);
    out.push(b':');
    two(out, s % 60);
    out.extend_from_slice(b" +0000");
}

/// What the function receives: the HTTP API payload, format 2.0.
pub(crate) struct HttpRequest<'a> {
    /// `$default` for a URL, the route's key for a route.
    pub route_key: &'a str,
    pub path_parameters: Option<&'a BTreeMap<String, String>>,
    pub method: &'a str,
    pub raw_path: &'a str,
    pub raw_query: &'a str,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
    pub source_ip: &'a str,
    pub url_id: &'a str,
    pub account: &'a str,
    pub request_id: &'a str,
    pub now: SystemTime,
}

/// JSON text written piece by piece into one buffer. The event's shape is fixed, so its
/// keys and punctuation are literal text, and only the values taken from the request are
/// escaped (by `serde_json`). A derived `Serialize` escaped every key again on every call,
/// and the keys are most of the event's text.
struct JsonText(Vec<u8>);

impl JsonText {
    /// `text` as it is: JSON already.
    fn raw(&mut self, text: &str) {
        self.0.extend_from_slice(text.as_bytes());
    }

    /// `text` as a JSON string.
    fn string(&mut self, text: &str) {
        serde_json::to_writer(&mut self.0, text).expect("a string serializes into a Vec");
    }

    /// An array of strings.
    fn array<'a>(&mut self, items: impl Iterator<Item = &'a str>) {
        self.list(("[", "]"), items, Self::string);
    }

    /// An object of string values.
    fn object<'a>(&mut self, entries: impl Iterator<Item = (&'a str, &'a str)>) {
        self.list(("{", "}"), entries, |out, (key, value)| {
            out.string(key);
            out.raw(":");
            out.string(value);
        });
    }

    /// `items` between `open` and `close`, comma-separated, each written by `write`.
    fn list<T>(
        &mut self,
        (open, close): (&str, &str),
        items: impl Iterator<Item = T>,
        mut write: impl FnMut(&mut Self, T),
    ) {
        self.raw(open);
        for (i, item) in items.enumerate() {
            if i > 0 {
                self.raw(",");
            }
            write(self, item);
        }
        self.raw(close);
    }
}

/// Appends `more` to a repeated header's or parameter's value, comma-separated.
fn join(all: &mut Cow<'_, str>, more: &str) {
    let all = all.to_mut();
    all.push(',');
    all.push_str(more);
}

pub(crate) fn http_event(r: &HttpRequest<'_>) -> Vec<u8> {
    let mut headers: BTreeMap<&str, Cow<'_, str>> = BTreeMap::new();
    let mut cookies: Vec<&str> = Vec::new();
    for (name, value) in r.headers {
        let Ok(value) = value.to_str() else { continue };
        if name == "cookie" {
            cookies.extend(value.split(';').map(str::trim).filter(|c| !c.is_empty()));
            continue;
        }
        headers
            .entry(name.as_str())
            .and_modify(|v| join(v, value))
            .or_insert(Cow::Borrowed(value));
    }
    let mut query: BTreeMap<Cow<'_, str>, Cow<'_, str>> = BTreeMap::new();
    for (k, v) in form_urlencoded::parse(r.raw_query.as_bytes()) {
        match query.entry(k) {
            std::collections::btree_map::Entry::Occupied(mut all) => join(all.get_mut(), &v),
            std::collections::btree_map::Entry::Vacant(slot) => {
                slot.insert(v);
            }
        }
    }
    let epoch_ms = r
        .now
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64;
    let header = |name: &str| headers.get(name).map_or("", |v| v.as_ref());
    let (body, is_base64_encoded) = if r.body.is_empty() {
        (None, false)
    } else {
        match std::str::from_utf8(r.body) {
            Ok(body) if is_text(headers.get("content-type").map(|v| v.as_ref())) => {
                (Some(Cow::Borrowed(body)), false)
            }
            _ => (Some(Cow::Owned(BASE64.encode(r.body))), true),
        }
    };
    // Sized for the event's fixed text and what the request brings, each value once (the
    // path and the query twice), so that it is written without growing unless escaped.
    let from_request = 2 * (r.raw_path.len() + r.raw_query.len())
        + body.as_ref().map_or(0, |b| b.len())
        + r.headers
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 6)
            .sum::<usize>();
    let mut out = JsonText(Vec::with_capacity(512 + from_request));
    out.raw(r#"{"version":"2.0","routeKey":"#);
    out.string(r.route_key);
    out.raw(r#","rawPath":"#);
    out.string(r.raw_path);
    out.raw(r#","rawQueryString":"#);
    out.string(r.raw_query);
    if !cookies.is_empty() {
        out.raw(r#","cookies":"#);
        out.array(cookies.iter().copied());
    }
    out.raw(r#","headers":"#);
    out.object(headers.iter().map(|(k, v)| (*k, v.as_ref())));
    if !query.is_empty() {
        out.raw(r#","queryStringParameters":"#);
        out.object(query.iter().map(|(k, v)| (k.as_ref(), v.as_ref())));
    }
    if let Some(params) = r.path_parameters.filter(|p| !p.is_empty()) {
        out.raw(r#","pathParameters":"#);
        out.object(params.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    }
    out.raw(r#","requestContext":{"accountId":"#);
    out.string(r.account);
    out.raw(r#","apiId":"#);
    out.string(r.url_id);
    out.raw(r#","domainName":"#);
    out.string(header("host"));
    out.raw(r#","domainPrefix":"#);
    out.string(r.url_id);
    out.raw(r#","http":{"method":"#);
    out.string(r.method);
    out.raw(r#","path":"#);
    out.string(r.raw_path);
    out.raw(r#","protocol":"HTTP/1.1","sourceIp":"#);
    out.string(r.source_ip);
    out.raw(r#","userAgent":"#);
    out.string(header("user-agent"));
    out.raw(r#"},"requestId":"#);
    out.string(r.request_id);
    out.raw(r#","routeKey":"#);
    out.string(r.route_key);
    out.raw(r#","stage":"$default","time":""#);
    clf_time(r.now, &mut out.0);
    out.raw(r#"","timeEpoch":"#);
    serde_json::to_writer(&mut out.0, &epoch_ms).expect("a number serializes into a Vec");
    out.raw("}");
    if let Some(body) = &body {
        out.raw(r#","body":"#);
        out.string(body);
    }
    out.raw(if is_base64_encoded {
        r#","isBase64Encoded":true}"#
    } else {
        r#","isBase64Encoded":false}"#
    });
    out.0
}

/// The fields of a function's answer that shape an HTTP response. Any others are skipped
/// as they are read, not built: an answer that echoes its event back is mostly others.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct HttpAnswer {
    /// Present (even as `null`) makes the answer a response document.
    #[serde(default, deserialize_with = "present")]
    status_code: Option<Value>,
    #[serde(default)]
    body: Value,
    #[serde(default)]
    is_base64_encoded: Value,
    #[serde(default)]
    headers: Value,
    #[serde(default)]
    cookies: Value,
}

/// A field that is there, whatever its value, `null` included.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// The HTTP response a function's answer maps to.
pub(crate) fn http_response(answer: &[u8]) -> Response {
    // Only an object is a response document (a struct would also be read from an array).
    let parsed = if answer.trim_ascii_start().starts_with(b"{") {
        serde_json::from_slice::<HttpAnswer>(answer).ok()
    } else {
        None
    };
    let Some((status, doc)) = parsed.and_then(|mut doc| Some((doc.status_code.take()?, doc)))
    else {
        let mut response = Response::new(Body::from(answer.to_vec()));
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        return response;
    };
    let status = status
        .as_u64()
        .and_then(|s| u16::try_from(s).ok())
        .and_then(|s| StatusCode::from_u16(s).ok());
    let Some(status) = status else {
        return bad_gateway("the function's statusCode is not an HTTP status");
    };
    let body = match doc.body {
        Value::Null => Vec::new(),
        Value::String(s) if doc.is_base64_encoded == Value::Bool(true) => match BASE64.decode(s) {
            Ok(bytes) => bytes,
            Err(_) => return bad_gateway("the function's body is not valid base64"),
        },
        Value::String(s) => s.into_bytes(),
        other => other.to_string().into_bytes(),
    };
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    let h = response.headers_mut();
    if let Value::Object(headers) = &doc.headers {
        for (name, value) in headers {
            let value = match value {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            if let (Ok(name), Ok(value)) = (
                HeaderName::try_from(name.as_str()),
                HeaderValue::try_from(value),
            ) {
                h.append(name, value);
            }
        }
    }
    if let Value::Array(cookies) = &doc.cookies {
        for cookie in cookies.iter().filter_map(Value::as_str) {
            if let Ok(value) = HeaderValue::try_from(cookie) {
                h.append("set-cookie", value);
            }
        }
    }
    if !h.contains_key(CONTENT_TYPE) {
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    response
}

pub(crate) fn message(status: StatusCode, text: &str) -> Response {
    (status, Json(json!({ "Message": text }))).into_response()
}

fn bad_gateway(why: &str) -> Response {
    tracing::warn!(%why, "a function URL's answer could not be mapped");
    message(StatusCode::BAD_GATEWAY, "Internal Server Error")
}

/// The header that carries the request id back. A `&str` name would be looked up and copied
/// into a new `HeaderName` on every call.
const REQUEST_ID: HeaderName = HeaderName::from_static("x-amzn-requestid");

/// What an HTTP request reaches: a function URL's or a route's function.
pub(crate) struct Target<'a> {
    pub function: &'a str,
    /// A version or alias; `$LATEST` when absent.
    pub qualifier: Option<&'a str>,
    pub auth_type: &'a str,
    pub route_key: &'a str,
    pub api_id: &'a str,
    pub raw_path: &'a str,
    pub path_parameters: BTreeMap<String, String>,
}

/// A function URL's path: its id and what follows it.
#[derive(Deserialize)]
pub struct UrlPath {
    id: String,
    #[serde(default)]
    path: String,
}

/// `ANY /url/{id}[/{*path}]`: calls the function behind a URL.
pub async fn serve(
    State(state): State<AppState>,
    Path(UrlPath { id, path }): Path<UrlPath>,
    request: Request,
) -> Response {
    let source_ip = source_ip(&request);
    serve_url(&state, id, format!("/{path}"), request, source_ip).await
}

/// The id and the rest of a function URL's path (`/url/{id}[/{*path}]`, the rest with its
/// leading `/`, and `/` when there is none) when it needs no decoding (no `%`), and the
/// method is not `HEAD` (whose answer the router strips of its body); any other path is left
/// to the router, which decodes it.
pub(crate) fn plain_url_path(method: &Method, path: &str) -> Option<(String, String)> {
    if method == Method::HEAD || path.contains('%') {
        return None;
    }
    let rest = path.strip_prefix("/url/")?;
    let (id, raw_path) = rest.find('/').map_or((rest, "/"), |end| rest.split_at(end));
    (!id.is_empty()).then(|| (id.to_owned(), raw_path.to_owned()))
}

/// Calls the function behind the URL `id` with `request`, whose path past the id is
/// `raw_path` (from its `/`).
pub(crate) async fn serve_url(
    state: &AppState,
    id: String,
    raw_path: String,
    request: Request,
    source_ip: String,
) -> Response {
    let Some(served) = state.registry.url_by_id(&id) else {
        return message(StatusCode::NOT_FOUND, "Not Found");
    };
    if let Some(answer) = served
        .cors
        .as_ref()
        .and_then(|c| c.preflight(request.method(), request.headers()))
    {
        return answer;
    }
    let origin = request.headers().get("origin").cloned();
    let config = &served.config;
    let target = Target {
        function: &config.function,
        qualifier: (config.qualifier != "$LATEST").then_some(config.qualifier.as_str()),
        auth_type: &config.auth_type,
        route_key: "$default",
        api_id: &id,
        raw_path: &raw_path,
        path_parameters: BTreeMap::new(),
    };
    // Boxed: the call's state is built once on the heap instead of being copied through
    // each future that wraps this one.
    let mut response = Box::pin(call(state, target, request, source_ip)).await;
    if let Some(cors) = &served.cors {
        cors.apply(origin.as_ref(), response.headers_mut());
    }
    response
}

/// The caller's address as the event's `sourceIp`: the connection's peer, which the server
/// puts in the request (127.0.0.1 for a request made in process, as in tests).
pub(crate) fn source_ip(request: &Request) -> String {
    request
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map_or_else(|| "127.0.0.1".into(), |c| ip_string(c.0.ip()))
}

/// `ip` as text.
pub(crate) fn ip_string(ip: std::net::IpAddr) -> String {
    match ip {
        // Octet by octet with `itoa`: the formatter's machinery cost five times as much, on
        // every call.
        std::net::IpAddr::V4(v4) => {
            let mut text = String::with_capacity(15);
            let mut digits = itoa::Buffer::new();
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    text.push('.');
                }
                text.push_str(digits.format(octet));
            }
            text
        }
        std::net::IpAddr::V6(v6) => {
            // Sized for any address: the formatter would otherwise grow it step by step.
            let mut text = String::with_capacity(40);
            let _ = write!(text, "{v6}");
            text
        }
    }
}

/// Checks the caller, runs the function on the request and maps its answer.
pub(crate) async fn call(
    state: &AppState,
    target: Target<'_>,
    request: Request,
    source_ip: String,
) -> Response {
    let (parts, body) = request.into_parts();
    let Ok(body) = crate::read_body(body, SYNC_PAYLOAD_BYTES).await else {
        return message(StatusCode::PAYLOAD_TOO_LARGE, "Request Entity Too Large");
    };
    if target.auth_type == "AWS_IAM" {
        if state.keys.is_empty() {
            return message(
                StatusCode::FORBIDDEN,
                "this endpoint requires a SigV4 signature (AWS_IAM) and the server has no access keys; create one with `ember keys create`",
            );
        }
        if let Err(e) = crate::auth::verify(state, &parts, &body, "lambda") {
            return message(StatusCode::FORBIDDEN, &e.to_string());
        }
    }
    let dispatch = state.registry.dispatcher().config();
    let request_id = uuid::Uuid::new_v4().to_string();
    let event = http_event(&HttpRequest {
        route_key: target.route_key,
        path_parameters: Some(&target.path_parameters),
        method: parts.method.as_str(),
        raw_path: target.raw_path,
        raw_query: parts.uri.query().unwrap_or(""),
        headers: &parts.headers,
        body: &body,
        source_ip: &source_ip,
        url_id: target.api_id,
        account: &dispatch.account,
        request_id: &request_id,
        now: SystemTime::now(),
    });
    let qualifier = match target.qualifier.map(Qualifier::parse).transpose() {
        Ok(q) => q,
        Err(_) => return message(StatusCode::BAD_GATEWAY, "Internal Server Error"),
    };
    // Unqualified, the invoked ARN is the function's own, which the dispatcher knows.
    let invoked_arn = target
        .qualifier
        .map(|q| state.registry.arn(target.function, Some(q)));
    let result = state
        .registry
        .dispatcher()
        .invoke(
            target.function,
            qualifier.as_ref(),
            InvokeRequest {
                payload: bytes::Bytes::from(event),
                invoked_arn,
                request_id: Some(request_id.clone()),
                ..Default::default()
            },
        )
        .await;
    let mut response = match result {
        Ok(r) if r.function_error.is_some() => {
            message(StatusCode::BAD_GATEWAY, "Internal Server Error")
        }
        Ok(r) => http_response(&r.body),
        Err(DispatchError::Throttled(_)) => {
            message(StatusCode::TOO_MANY_REQUESTS, "Rate Exceeded.")
        }
        Err(DispatchError::FunctionNotFound(_)) => message(StatusCode::NOT_FOUND, "Not Found"),
        Err(e) => {
            tracing::error!(error = %ember_core::error_chain(&e), "an HTTP call of a function failed");
            message(StatusCode::BAD_GATEWAY, "Internal Server Error")
        }
    };
    if let Ok(id) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID, id);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::try_from(*k).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn event(h: &HeaderMap, query: &str, body: &[u8]) -> Value {
        let event = http_event(&HttpRequest {
            route_key: "$default",
            path_parameters: None,
            method: "POST",
            raw_path: "/orders/7",
            raw_query: query,
            headers: h,
            body,
            source_ip: "10.0.0.1",
            url_id: "shop",
            account: "000000000000",
            request_id: "r-1",
            now: std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_583_348_638_390),
        });
        serde_json::from_slice(&event).unwrap()
    }

    #[test]
    fn a_request_becomes_the_http_api_2_0_payload() {
        let h = headers(&[
            ("host", "127.0.0.1:9000"),
            ("content-type", "application/json"),
            ("x-multi", "a"),
            ("x-multi", "b"),
            ("cookie", "c1=v1; c2=v2"),
            ("user-agent", "curl/8"),
        ]);
        let e = event(&h, "p=1&p=2&q=x", br#"{"n":1}"#);
        assert_eq!(e["version"], "2.0");
        assert_eq!(e["rawPath"], "/orders/7");
        assert_eq!(e["rawQueryString"], "p=1&p=2&q=x");
        assert_eq!(e["queryStringParameters"], json!({ "p": "1,2", "q": "x" }));
        assert_eq!(e["headers"]["x-multi"], "a,b");
        assert!(e["headers"].get("cookie").is_none());
        assert_eq!(e["cookies"], json!(["c1=v1", "c2=v2"]));
        assert_eq!(e["body"], r#"{"n":1}"#);
        assert_eq!(e["isBase64Encoded"], false);
        let c = &e["requestContext"];
        assert_eq!(c["http"]["method"], "POST");
        assert_eq!(c["http"]["sourceIp"], "10.0.0.1");
        assert_eq!(c["http"]["userAgent"], "curl/8");
        assert_eq!(c["time"], "04/Mar/2020:19:03:58 +0000");
        assert_eq!(c["timeEpoch"], 1_583_348_638_390u64);
    }

    #[test]
    fn values_from_the_request_are_escaped_in_the_event() {
        let h = headers(&[
            ("host", "h"),
            ("x-quote", r#"say "hi" \ then"#),
            ("content-type", "Text/Plain; charset=utf-8"),
        ]);
        let mut params = BTreeMap::new();
        params.insert("id".to_owned(), "a\"b".to_owned());
        let event = http_event(&HttpRequest {
            route_key: "GET /items/{id}",
            path_parameters: Some(&params),
            method: "GET",
            raw_path: "/items/\u{e9}\"",
            raw_query: "q=%22x%22",
            headers: &h,
            body: "line1\nline2\t\u{1}".as_bytes(),
            source_ip: "::1",
            url_id: "web",
            account: "000000000000",
            request_id: "r-2",
            now: std::time::UNIX_EPOCH,
        });
        let e: Value = serde_json::from_slice(&event).expect("the event is JSON");
        assert_eq!(e["headers"]["x-quote"], r#"say "hi" \ then"#);
        assert_eq!(e["pathParameters"]["id"], "a\"b");
        assert_eq!(e["rawPath"], "/items/\u{e9}\"");
        assert_eq!(e["requestContext"]["http"]["path"], "/items/\u{e9}\"");
        assert_eq!(e["queryStringParameters"]["q"], "\"x\"");
        assert_eq!(e["routeKey"], "GET /items/{id}");
        assert_eq!(e["requestContext"]["routeKey"], "GET /items/{id}");
        // A text type in any case, with parameters, travels as text.
        assert_eq!(e["body"], "line1\nline2\t\u{1}");
        assert_eq!(e["isBase64Encoded"], false);
        assert_eq!(e["requestContext"]["domainName"], "h");
        assert_eq!(e["requestContext"]["http"]["userAgent"], "");
        assert_eq!(e["requestContext"]["time"], "01/Jan/1970:00:00:00 +0000");
        assert_eq!(e["requestContext"]["timeEpoch"], 0);
        assert!(e.get("cookies").is_none());
    }

    #[test]
    fn text_content_types() {
        for text in [
            None,
            Some("text/html"),
            Some("TEXT/CSV"),
            Some("application/json; charset=utf-8"),
            Some("Application/JSON"),
            Some("application/vnd.api+json"),
            Some("image/svg+XML"),
            Some("application/x-www-form-urlencoded"),
        ] {
            assert!(is_text(text), "{text:?}");
        }
        for binary in [
            Some("application/octet-stream"),
            Some("image/png"),
            Some("application/jsonx"),
            Some("json"),
            Some(""),
            Some("\u{e9}t"),
        ] {
            assert!(!is_text(binary), "{binary:?}");
        }
    }

    #[test]
    fn addresses_as_text() {
        use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
        for v4 in [
            Ipv4Addr::new(0, 0, 0, 0),
            Ipv4Addr::new(10, 0, 0, 1),
            Ipv4Addr::new(127, 0, 0, 1),
            Ipv4Addr::new(192, 168, 100, 9),
            Ipv4Addr::new(255, 255, 255, 255),
            Ipv4Addr::new(1, 20, 109, 250),
        ] {
            assert_eq!(ip_string(IpAddr::V4(v4)), v4.to_string());
        }
        assert_eq!(ip_string(IpAddr::V6(Ipv6Addr::LOCALHOST)), "::1");
    }

    #[test]
    fn only_plain_function_url_paths_skip_the_router() {
        let plain = |method: &Method, path: &str| plain_url_path(method, path);
        let owned = |id: &str, rest: &str| Some((id.to_owned(), rest.to_owned()));
        assert_eq!(plain(&Method::GET, "/url/web"), owned("web", "/"));
        assert_eq!(plain(&Method::POST, "/url/web/"), owned("web", "/"));
        assert_eq!(plain(&Method::PUT, "/url/web/a/b"), owned("web", "/a/b"));
        assert_eq!(plain(&Method::PUT, "/url/web/a/"), owned("web", "/a/"));
        assert_eq!(plain(&Method::GET, "/url/web//a"), owned("web", "//a"));
        // Left to the router: no id, an escape to decode, HEAD, another prefix.
        for path in [
            "/url/",
            "/url//a",
            "/url/w%65b/",
            "/url/web/a%20b",
            "/urls/web",
            "/http/a",
        ] {
            assert_eq!(plain(&Method::GET, path), None, "{path}");
        }
        assert_eq!(plain(&Method::HEAD, "/url/web/"), None);
    }

    #[test]
    fn a_binary_body_travels_as_base64() {
        let h = headers(&[("content-type", "application/octet-stream")]);
        let e = event(&h, "", &[0, 159, 146, 150]);
        assert_eq!(e["isBase64Encoded"], true);
        assert_eq!(e["body"], BASE64.encode([0, 159, 146, 150]));
        assert!(e.get("queryStringParameters").is_none());
    }

    #[tokio::test]
    async fn answers_map_to_responses() {
        use http_body_util::BodyExt;
        let read = |r: Response| async move {
            let status = r.status();
            let headers = r.headers().clone();
            (
                status,
                headers,
                r.into_body().collect().await.unwrap().to_bytes(),
            )
        };
        let (status, h, body) = read(http_response(
            br#"{"statusCode": 201, "headers": {"x-a": "1"}, "cookies": ["k=v"], "body": "made"}"#,
        ))
        .await;
        assert_eq!(status, 201);
        assert_eq!(h["x-a"], "1");
        assert_eq!(h["set-cookie"], "k=v");
        assert_eq!(body, "made");
        let png = BASE64.encode([137, 80, 78, 71]);
        let doc = json!({ "statusCode": 200, "headers": {"content-type": "image/png"}, "body": png, "isBase64Encoded": true });
        let (_, h, body) = read(http_response(doc.to_string().as_bytes())).await;
        assert_eq!(h["content-type"], "image/png");
        assert_eq!(&body[..], &[137, 80, 78, 71]);
        // Any other JSON value: 200, application/json, as is.
        let (status, h, body) = read(http_response(br#"{"hello": "world"}"#)).await;
        assert_eq!(
            (status.as_u16(), &h["content-type"]),
            (200, &HeaderValue::from_static("application/json"))
        );
        assert_eq!(body, r#"{"hello": "world"}"#);
        let (status, _, _) = read(http_response(br#"{"statusCode": 99}"#)).await;
        assert_eq!(status, 502);
        let (status, _, _) = read(http_response(br#"{"statusCode": null}"#)).await;
        assert_eq!(status, 502);
        let (status, _, body) = read(http_response(br#"[1, {"statusCode": 201}]"#)).await;
        assert_eq!(
            (status.as_u16(), &body[..]),
            (200, &br#"[1, {"statusCode": 201}]"#[..])
        );
    }
}
