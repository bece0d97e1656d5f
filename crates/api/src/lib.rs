//! Ember's HTTP surfaces, on one axum router.
//!
//! - `/2015-03-31/functions…`: the Lambda-compatible API (`functions`, `invoke`), the
//!   control plane's canonical surface.
//! - `/ember/v1/…`: what Lambda lacks (`ember`): logs, environment counts, health.
//! - [`error`]: every error variant → status and Lambda error type, in one match.
//! - [`registry`]: the control plane — validates, stores, tells the dispatcher.
//! - [`model`]: the Lambda JSON shapes.

mod ember;
pub mod error;
mod functions;
mod invoke;
pub mod model;
pub mod registry;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::DefaultBodyLimit;
use axum::http::{Method, Uri};
use axum::routing::{get, post, put};
use bytes::Bytes;
use http_body_util::BodyExt;

pub use error::ApiError;
pub use registry::Registry;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub registry: Arc<Registry>,
}

/// The whole API.
pub fn router(state: AppState) -> Router {
    let lambda = Router::new()
        .route("/functions", get(functions::list).post(functions::create))
        .route("/functions/", get(functions::list).post(functions::create))
        .route(
            "/functions/{name}",
            get(functions::get).delete(functions::delete),
        )
        .route(
            "/functions/{name}/configuration",
            get(functions::get_configuration).put(functions::update_configuration),
        )
        .route("/functions/{name}/code", put(functions::update_code))
        .route("/functions/{name}/invocations", post(invoke::invoke));
    let ember = Router::new()
        .route("/health", get(ember::health))
        .route("/functions/{name}/logs", get(ember::logs))
        .route("/functions/{name}/environments", get(ember::environments))
        .route("/functions/{name}/code", get(ember::code));
    Router::new()
        .nest("/2015-03-31", lambda)
        .nest("/ember/v1", ember)
        .fallback(unknown)
        // Handlers read bodies themselves, each with its own limit and error.
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

async fn unknown(method: Method, uri: Uri) -> ApiError {
    ApiError::UnknownOperation {
        method: method.to_string(),
        path: uri.path().to_owned(),
    }
}

/// Reads a request body of at most `limit` bytes.
pub(crate) async fn read_body(body: Body, limit: usize) -> Result<Bytes, ()> {
    http_body_util::Limited::new(body, limit)
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|_| ())
}
