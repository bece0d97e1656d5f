//! Cross-origin resource sharing on function URLs: the `Cors` document of a URL's
//! configuration, checked when it is stored and applied to each request.
//!
//! With `Cors` set, Ember answers a browser's preflight (`OPTIONS` with `Origin` and
//! `Access-Control-Request-Method`) itself, without running the function and before any
//! signature check (browsers never sign a preflight). On every other request from an
//! allowed origin it replaces whatever `Access-Control-*` headers the function returned
//! with the configured ones, as Lambda does.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, Response, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ApiError;

/// The methods a `Cors` document may allow.
const METHODS: [&str; 7] = ["GET", "PUT", "HEAD", "POST", "PATCH", "DELETE", "*"];

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub(crate) struct Cors {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_credentials: Option<bool>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_headers: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_methods: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_origins: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expose_headers: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_age: Option<u32>,
}

fn invalid(why: String) -> ApiError {
    ApiError::InvalidParameter(format!("Cors: {why}"))
}

fn check_list(
    name: &str,
    list: &[String],
    max_items: usize,
    max_len: usize,
) -> Result<(), ApiError> {
    if list.len() > max_items {
        return Err(invalid(format!(
            "{name} has {} entries; at most {max_items} are allowed",
            list.len()
        )));
    }
    if let Some(long) = list.iter().find(|s| s.len() > max_len) {
        return Err(invalid(format!(
            "{name} entry {long:?} is longer than {max_len} characters"
        )));
    }
    if let Some(bad) = list.iter().find(|s| HeaderValue::from_str(s).is_err()) {
        return Err(invalid(format!(
            "{name} entry {bad:?} is not a valid header value"
        )));
    }
    Ok(())
}

impl Cors {
    /// Reads and checks a `Cors` document as a client sent it.
    pub fn parse(doc: Value) -> Result<Cors, ApiError> {
        let mut cors: Cors = serde_json::from_value(doc).map_err(|e| invalid(e.to_string()))?;
        check_list("AllowHeaders", &cors.allow_headers, 100, 1024)?;
        check_list("ExposeHeaders", &cors.expose_headers, 100, 1024)?;
        check_list("AllowOrigins", &cors.allow_origins, 100, 253)?;
        check_list("AllowMethods", &cors.allow_methods, 6, 6)?;
        for method in &mut cors.allow_methods {
            method.make_ascii_uppercase();
            if !METHODS.contains(&method.as_str()) {
                return Err(invalid(format!(
                    "AllowMethods entry {method:?} is not one of {}",
                    METHODS.join(", ")
                )));
            }
        }
        if let Some(age) = cors.max_age.filter(|a| *a > 86_400) {
            return Err(invalid(format!(
                "MaxAge is {age}; it is at most 86400 seconds"
            )));
        }
        Ok(cors)
    }

    /// The stored form of a configuration's `Cors`; `None` when it allows nothing.
    pub fn stored(&self) -> Option<String> {
        (*self != Cors::default()).then(|| serde_json::to_string(self).expect("Cors serializes"))
    }

    /// A stored `Cors` document (written by [`Cors::stored`]).
    pub fn load(stored: &str) -> Option<Cors> {
        serde_json::from_str(stored).ok()
    }

    fn credentials(&self) -> bool {
        self.allow_credentials == Some(true)
    }

    /// The `Access-Control-Allow-Origin` value for a request's `Origin`, if it is allowed.
    /// A wildcard is answered with `*`, unless credentials are allowed: browsers refuse
    /// `*` with credentials, so the origin itself is named.
    fn allowed_origin(&self, origin: &str) -> Option<HeaderValue> {
        if self.allow_origins.iter().any(|o| o == "*") {
            return if self.credentials() {
                HeaderValue::from_str(origin).ok()
            } else {
                Some(HeaderValue::from_static("*"))
            };
        }
        self.allow_origins
            .iter()
            .find(|o| o.eq_ignore_ascii_case(origin))
            .and_then(|o| HeaderValue::from_str(o).ok())
    }

    fn allows_method(&self, method: &str) -> bool {
        self.allow_methods
            .iter()
            .any(|m| m == "*" || m.eq_ignore_ascii_case(method))
    }

    /// Ember's own answer to a preflight request, or `None` if this is not one.
    pub fn preflight(&self, method: &Method, headers: &HeaderMap) -> Option<Response<Body>> {
        if method != Method::OPTIONS {
            return None;
        }
        let origin = headers.get("origin")?.to_str().ok()?;
        let wanted = headers
            .get("access-control-request-method")?
            .to_str()
            .ok()?;
        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::OK;
        let h = response.headers_mut();
        h.insert("vary", HeaderValue::from_static("Origin"));
        let Some(allowed) = self.allowed_origin(origin) else {
            return Some(response);
        };
        if !self.allows_method(wanted) {
            return Some(response);
        }
        h.insert("access-control-allow-origin", allowed);
        let methods = self.allow_methods.join(", ");
        if let Ok(v) = HeaderValue::from_str(&methods) {
            h.insert("access-control-allow-methods", v);
        }
        let requested = headers.get("access-control-request-headers").cloned();
        let allow_headers = if self.allow_headers.iter().any(|a| a == "*") {
            requested
        } else if self.allow_headers.is_empty() {
            None
        } else {
            HeaderValue::from_str(&self.allow_headers.join(", ")).ok()
        };
        if let Some(v) = allow_headers {
            h.insert("access-control-allow-headers", v);
        }
        if self.credentials() {
            h.insert(
                "access-control-allow-credentials",
                HeaderValue::from_static("true"),
            );
        }
        if let Some(age) = self.max_age {
            h.insert("access-control-max-age", HeaderValue::from(age));
        }
        Some(response)
    }

    /// Replaces the function's `Access-Control-*` headers with the configured ones for
    /// a request from `origin`.
    pub fn apply(&self, origin: Option<&HeaderValue>, h: &mut HeaderMap) {
        let cors_headers: Vec<_> = h
            .keys()
            .filter(|k| k.as_str().starts_with("access-control-"))
            .cloned()
            .collect();
        for name in cors_headers {
            h.remove(name);
        }
        let Some(allowed) = origin
            .and_then(|o| o.to_str().ok())
            .and_then(|o| self.allowed_origin(o))
        else {
            return;
        };
        if allowed != "*" {
            h.append("vary", HeaderValue::from_static("Origin"));
        }
        h.insert("access-control-allow-origin", allowed);
        if !self.expose_headers.is_empty()
            && let Ok(v) = HeaderValue::from_str(&self.expose_headers.join(", "))
        {
            h.insert("access-control-expose-headers", v);
        }
        if self.credentials() {
            h.insert(
                "access-control-allow-credentials",
                HeaderValue::from_static("true"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn request(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                axum::http::HeaderName::try_from(*k).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn documents_are_checked_with_a_reason() {
        let bad = [
            (json!({ "AllowMethods": ["TRACE"] }), "TRACE"),
            (json!({ "MaxAge": 90000 }), "86400"),
            (json!({ "AllowOrigin": ["*"] }), "AllowOrigin"),
            (
                json!({ "AllowMethods": ["GET", "PUT", "POST", "HEAD", "PATCH", "DELETE", "*"] }),
                "at most 6",
            ),
        ];
        for (doc, why) in bad {
            let e = Cors::parse(doc.clone()).unwrap_err().to_string();
            assert!(e.contains(why), "{doc}: {e}");
        }
        let c = Cors::parse(json!({ "AllowMethods": ["get"], "AllowOrigins": ["*"] })).unwrap();
        assert_eq!(c.allow_methods, ["GET"]);
        assert_eq!(Cors::load(&c.stored().unwrap()), Some(c));
        assert_eq!(Cors::parse(json!({})).unwrap().stored(), None);
    }

    #[test]
    fn a_preflight_is_answered_only_for_allowed_origins_and_methods() {
        let cors = Cors::parse(json!({
            "AllowOrigins": ["https://app.example"],
            "AllowMethods": ["GET", "POST"],
            "AllowHeaders": ["x-token"],
            "MaxAge": 600,
        }))
        .unwrap();
        let ok = cors
            .preflight(
                &Method::OPTIONS,
                &request(&[
                    ("origin", "https://app.example"),
                    ("access-control-request-method", "POST"),
                ]),
            )
            .unwrap();
        let h = ok.headers();
        assert_eq!(h["access-control-allow-origin"], "https://app.example");
        assert_eq!(h["access-control-allow-methods"], "GET, POST");
        assert_eq!(h["access-control-allow-headers"], "x-token");
        assert_eq!(h["access-control-max-age"], "600");
        for denied in [
            [
                ("origin", "https://evil.example"),
                ("access-control-request-method", "POST"),
            ],
            [
                ("origin", "https://app.example"),
                ("access-control-request-method", "DELETE"),
            ],
        ] {
            let r = cors.preflight(&Method::OPTIONS, &request(&denied)).unwrap();
            assert!(r.headers().get("access-control-allow-origin").is_none());
        }
        // Not a preflight: the function answers.
        let plain = request(&[("origin", "https://app.example")]);
        assert!(cors.preflight(&Method::OPTIONS, &plain).is_none());
        assert!(cors.preflight(&Method::GET, &plain).is_none());
    }

    #[test]
    fn responses_carry_the_configured_headers_not_the_functions() {
        let cors = Cors::parse(json!({
            "AllowOrigins": ["*"],
            "AllowCredentials": true,
            "ExposeHeaders": ["x-total"],
        }))
        .unwrap();
        let mut h = request(&[("access-control-allow-origin", "https://other.example")]);
        let origin = HeaderValue::from_static("https://app.example");
        cors.apply(Some(&origin), &mut h);
        // With credentials a wildcard names the caller's origin.
        assert_eq!(h["access-control-allow-origin"], "https://app.example");
        assert_eq!(h["access-control-expose-headers"], "x-total");
        assert_eq!(h["access-control-allow-credentials"], "true");
        assert_eq!(h["vary"], "Origin");
        let mut h = request(&[("access-control-allow-origin", "*")]);
        cors.apply(None, &mut h);
        assert!(h.is_empty(), "{h:?}");
    }
}
