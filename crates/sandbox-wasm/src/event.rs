//! An HTTP handler behind Ember's triggers: an event becomes a request, the response an
//! answer.
//!
//! - An HTTP event (payload format 2.0, what function URLs and routes send, or what a
//!   caller of Invoke builds) becomes that request: method, raw path and query, headers,
//!   cookies, body (decoded from base64 when marked so). The response becomes the
//!   `statusCode`/`headers`/`cookies`/`body`/`isBase64Encoded` document the trigger turns
//!   back into HTTP; a body that is not text goes as base64.
//! - Any other event is `POST /events` with the event as a JSON body, and the response's
//!   body is the invocation's result; a status of 400 or more fails the invocation.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;

use crate::HttpAnswer;

/// Where events that are not HTTP requests are sent.
pub const EVENTS_PATH: &str = "/events";

/// The host a request names when its event names none.
const DEFAULT_HOST: &str = "localhost";

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct HttpEvent {
    raw_path: String,
    #[serde(default)]
    raw_query_string: String,
    #[serde(default)]
    cookies: Vec<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    body: Option<String>,
    #[serde(default)]
    is_base64_encoded: bool,
    request_context: Context,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Context {
    domain_name: Option<String>,
    http: Method,
}

#[derive(serde::Deserialize)]
struct Method {
    method: String,
}

/// The request an event stands for.
pub struct Request {
    pub request: http::Request<Bytes>,
    /// Whether the event was an HTTP event (and so wants an HTTP response document).
    pub http_event: bool,
}

/// The request `payload` stands for, or why it stands for none.
pub fn request(payload: &Bytes) -> Result<Request, String> {
    let looks_http = payload.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    let event = looks_http
        .then(|| serde_json::from_slice::<HttpEvent>(payload).ok())
        .flatten();
    let Some(event) = event else {
        let request = http::Request::post(EVENTS_PATH)
            .header(http::header::HOST, DEFAULT_HOST)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(payload.clone())
            .map_err(|e| e.to_string())?;
        return Ok(Request {
            request,
            http_event: false,
        });
    };
    let body = match event.body {
        Some(body) if event.is_base64_encoded => Bytes::from(
            BASE64
                .decode(body)
                .map_err(|e| format!("the event's body is marked base64 but is not: {e}"))?,
        ),
        Some(body) => Bytes::from(body),
        None => Bytes::new(),
    };
    let mut target = event.raw_path;
    if !target.starts_with('/') {
        target.insert(0, '/');
    }
    if !event.raw_query_string.is_empty() {
        target.push('?');
        target.push_str(&event.raw_query_string);
    }
    let mut request = http::Request::builder()
        .method(event.request_context.http.method.as_str())
        .uri(&target);
    let mut has_host = false;
    for (name, value) in &event.headers {
        has_host |= name.eq_ignore_ascii_case("host");
        request = request.header(name, value);
    }
    if !has_host {
        let host = event.request_context.domain_name.as_deref();
        request = request.header(http::header::HOST, host.unwrap_or(DEFAULT_HOST));
    }
    if !event.cookies.is_empty() {
        request = request.header(http::header::COOKIE, event.cookies.join("; "));
    }
    let request = request
        .body(body)
        .map_err(|e| format!("the event is not a valid HTTP request: {e}"))?;
    Ok(Request {
        request,
        http_event: true,
    })
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct HttpResponse<'a> {
    status_code: u16,
    headers: BTreeMap<&'a str, String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    cookies: Vec<&'a str>,
    body: String,
    is_base64_encoded: bool,
}

/// The HTTP response document for `answer`: headers with several values joined by commas,
/// `set-cookie` values as `cookies`, the body as text when it is text.
pub fn http_response(answer: &HttpAnswer) -> Bytes {
    let mut headers: BTreeMap<&str, String> = BTreeMap::new();
    let mut cookies = Vec::new();
    for (name, value) in &answer.headers {
        let Ok(value) = std::str::from_utf8(value) else {
            continue;
        };
        if name == "set-cookie" {
            cookies.push(value);
            continue;
        }
        headers
            .entry(name)
            .and_modify(|joined| {
                joined.push_str(", ");
                joined.push_str(value);
            })
            .or_insert_with(|| value.to_owned());
    }
    let text = headers
        .get("content-type")
        .is_none_or(|kind| is_text(kind))
        .then(|| std::str::from_utf8(&answer.body).ok())
        .flatten();
    let (body, is_base64_encoded) = match text {
        Some(text) => (text.to_owned(), false),
        None => (BASE64.encode(&answer.body), true),
    };
    let document = HttpResponse {
        status_code: answer.status,
        headers,
        cookies,
        body,
        is_base64_encoded,
    };
    Bytes::from(serde_json::to_vec(&document).expect("a response document serializes"))
}

fn is_text(content_type: &str) -> bool {
    let kind = content_type.to_ascii_lowercase();
    kind.starts_with("text/")
        || ["json", "xml", "javascript", "x-www-form-urlencoded"]
            .iter()
            .any(|t| kind.contains(t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_http_event_becomes_its_request() {
        let event = serde_json::json!({
            "version": "2.0",
            "rawPath": "/items/7",
            "rawQueryString": "a=1&b=2",
            "cookies": ["c1=v1", "c2=v2"],
            "headers": {"x-greeting": "hi", "content-type": "application/octet-stream"},
            "requestContext": {"domainName": "f.example", "http": {"method": "PUT"}},
            "body": BASE64.encode([0u8, 159, 146, 150]),
            "isBase64Encoded": true
        });
        let made = request(&Bytes::from(event.to_string())).unwrap();
        assert!(made.http_event);
        let request = made.request;
        assert_eq!(request.method(), http::Method::PUT);
        assert_eq!(request.uri(), "/items/7?a=1&b=2");
        assert_eq!(request.headers()["x-greeting"], "hi");
        assert_eq!(request.headers()["host"], "f.example");
        assert_eq!(request.headers()["cookie"], "c1=v1; c2=v2");
        assert_eq!(request.body().as_ref(), &[0u8, 159, 146, 150]);
    }

    #[test]
    fn any_other_event_is_posted_to_the_events_path() {
        for payload in [&br#"{"order": 7}"#[..], b"[1, 2]", b"\"text\""] {
            let made = request(&Bytes::copy_from_slice(payload)).unwrap();
            assert!(!made.http_event);
            assert_eq!(made.request.method(), http::Method::POST);
            assert_eq!(made.request.uri(), EVENTS_PATH);
            assert_eq!(made.request.body().as_ref(), payload);
        }
    }

    #[test]
    fn a_response_becomes_the_document_triggers_read() {
        let answer = HttpAnswer {
            status: 201,
            headers: vec![
                ("content-type".into(), Bytes::from("text/plain")),
                ("x-a".into(), Bytes::from("1")),
                ("x-a".into(), Bytes::from("2")),
                ("set-cookie".into(), Bytes::from("k=v")),
            ],
            body: Bytes::from("made"),
        };
        let doc: serde_json::Value = serde_json::from_slice(&http_response(&answer)).unwrap();
        assert_eq!(
            doc,
            serde_json::json!({
                "statusCode": 201,
                "headers": {"content-type": "text/plain", "x-a": "1, 2"},
                "cookies": ["k=v"],
                "body": "made",
                "isBase64Encoded": false
            })
        );
        let png = HttpAnswer {
            status: 200,
            headers: vec![("content-type".into(), Bytes::from("image/png"))],
            body: Bytes::from_static(&[137, 80, 78, 71]),
        };
        let doc: serde_json::Value = serde_json::from_slice(&http_response(&png)).unwrap();
        assert_eq!(doc["isBase64Encoded"], true);
        assert_eq!(doc["body"], BASE64.encode([137u8, 80, 78, 71]));
    }
}
