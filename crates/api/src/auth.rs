//! Access keys and request signing.
//!
//! With no keys, Ember accepts unsigned requests, and the server only starts on a loopback
//! address (see `ember server`). Once a key exists, every request (but `/ember/v1/health`)
//! must carry a valid SigV4 signature by a known key: the AWS CLI and SDKs sign with the
//! credentials they are given, and so does the `ember` CLI. Secrets are sealed at rest
//! ([`ember_store::secrets`]) and held in memory to verify signatures without the store.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ember_store::{SecretBox, Store, StoredKey};
use rand::Rng;

use crate::AppState;
use crate::error::ApiError;
use crate::sigv4::{self, SignedRequest};

/// Largest body a signed request may have: the largest control-plane request.
const SIGNED_BODY_BYTES: usize = 70 * 1024 * 1024;

pub struct KeyRing {
    store: Arc<Store>,
    sealer: SecretBox,
    /// Key id → (secret, creation date).
    keys: RwLock<HashMap<String, (String, String)>>,
    /// Whether the server listens beyond loopback: then the last key cannot be deleted.
    public: bool,
}

impl KeyRing {
    pub fn load(store: Arc<Store>, sealer: SecretBox, public: bool) -> Result<KeyRing, ApiError> {
        let mut keys = HashMap::new();
        for key in store.list_keys()? {
            let secret = sealer
                .open_sealed(&key.nonce, &key.sealed_secret)
                .map_err(|e| ApiError::Service(format!("access key {}: {e}", key.key_id)))?;
            keys.insert(key.key_id, (secret, key.created));
        }
        Ok(KeyRing {
            store,
            sealer,
            keys: RwLock::new(keys),
            public,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.keys.read().expect("keys lock").is_empty()
    }

    fn secret(&self, key_id: &str) -> Option<String> {
        self.keys
            .read()
            .expect("keys lock")
            .get(key_id)
            .map(|(s, _)| s.clone())
    }

    /// Makes a new key: (id, secret, creation date). The secret is shown once.
    pub fn create(&self) -> Result<(String, String, String), ApiError> {
        let mut rng = rand::rng();
        const UPPER: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
        const SECRET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let id: String = "EMBR"
            .chars()
            .chain((0..16).map(|_| UPPER[rng.random_range(0..UPPER.len())] as char))
            .collect();
        let secret: String = (0..40)
            .map(|_| SECRET[rng.random_range(0..SECRET.len())] as char)
            .collect();
        let created = ember_core::time::lambda_timestamp(SystemTime::now());
        let (nonce, sealed_secret) = self.sealer.seal(&secret);
        self.store.insert_key(&StoredKey {
            key_id: id.clone(),
            nonce,
            sealed_secret,
            created: created.clone(),
        })?;
        self.keys
            .write()
            .expect("keys lock")
            .insert(id.clone(), (secret.clone(), created.clone()));
        Ok((id, secret, created))
    }

    /// (id, creation date) of every key.
    pub fn list(&self) -> Vec<(String, String)> {
        let mut keys: Vec<_> = self
            .keys
            .read()
            .expect("keys lock")
            .iter()
            .map(|(id, (_, created))| (id.clone(), created.clone()))
            .collect();
        keys.sort();
        keys
    }

    pub fn delete(&self, key_id: &str) -> Result<(), ApiError> {
        let mut keys = self.keys.write().expect("keys lock");
        if !keys.contains_key(key_id) {
            return Err(ApiError::NotFound(format!("no access key {key_id}")));
        }
        if self.public && keys.len() == 1 {
            return Err(ApiError::Conflict(
                "this is the last access key of a server listening beyond loopback; deleting it would open the API to anyone. Create another key first".into(),
            ));
        }
        self.store.delete_key(key_id)?;
        keys.remove(key_id);
        Ok(())
    }
}

/// Checks a request's SigV4 signature (for `service`) against the key ring.
pub(crate) fn verify(
    state: &AppState,
    parts: &axum::http::request::Parts,
    body: &[u8],
    service: &str,
) -> Result<(), ApiError> {
    let headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
        .collect();
    let signed = SignedRequest {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        query: parts.uri.query().unwrap_or(""),
        headers: &headers,
        body,
    };
    let region = &state.registry.dispatcher().config().region;
    sigv4::verify(&signed, region, service, SystemTime::now(), |id| {
        state.keys.secret(id)
    })
    .map(|_| ())
    .map_err(ApiError::Auth)
}

/// Middleware: once keys exist, only requests signed by one of them pass. Function URLs
/// and HTTP routes check their own `AuthType` (see `urls`): their routes are outside this
/// layer, and a path under them that matches no route passes it too.
pub async fn require_signature(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    let http = path.starts_with("/url/") || path == "/http" || path.starts_with("/http/");
    if state.keys.is_empty() || path == "/ember/v1/health" || http {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let Ok(body) = crate::read_body(body, SIGNED_BODY_BYTES).await else {
        return ApiError::EntityTooLarge(format!(
            "Request must be smaller than {SIGNED_BODY_BYTES} bytes"
        ))
        .into_response();
    };
    // JSON-protocol calls are signed for their own service.
    let service = match parts
        .headers
        .get("x-amz-target")
        .and_then(|t| t.to_str().ok())
    {
        Some(t) if t.starts_with("AWSEvents.") => "events",
        Some(t) if t.starts_with("AmazonSQS.") => "sqs",
        _ => "lambda",
    };
    match verify(&state, &parts, &body, service) {
        Ok(()) => next.run(Request::from_parts(parts, Body::from(body))).await,
        Err(e) => e.into_response(),
    }
}

pub async fn create_key(State(state): State<AppState>) -> Result<Response, ApiError> {
    let keys = Arc::clone(&state.keys);
    let (id, secret, created) = tokio::task::spawn_blocking(move || keys.create())
        .await
        .map_err(|e| ApiError::Service(e.to_string()))??;
    let body =
        serde_json::json!({ "AccessKeyId": id, "SecretAccessKey": secret, "CreateDate": created });
    Ok((axum::http::StatusCode::CREATED, axum::Json(body)).into_response())
}

pub async fn list_keys(State(state): State<AppState>) -> Response {
    let keys: Vec<_> = state
        .keys
        .list()
        .into_iter()
        .map(|(id, created)| serde_json::json!({ "AccessKeyId": id, "CreateDate": created }))
        .collect();
    axum::Json(serde_json::json!({ "AccessKeys": keys })).into_response()
}

pub async fn delete_key(
    State(state): State<AppState>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Result<Response, ApiError> {
    let keys = Arc::clone(&state.keys);
    tokio::task::spawn_blocking(move || keys.delete(&id))
        .await
        .map_err(|e| ApiError::Service(e.to_string()))??;
    Ok(axum::http::StatusCode::NO_CONTENT.into_response())
}
