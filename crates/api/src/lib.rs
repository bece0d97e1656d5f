//! Ember's HTTP surfaces, on one axum router, which the server serves through [`front`]
//! (function URL calls go straight to their handler).
//!
//! - `/2015-03-31/functions…`: the Lambda-compatible API (`functions`, `invoke`,
//!   `versions` for versions and aliases), the control plane's canonical surface; tags
//!   and account settings under their own API dates (`account`).
//! - `concurrency`: reserved concurrency, and `/metrics` (OpenMetrics text).
//! - `/ember/v1/…`: what Lambda lacks (`ember`): logs, environment counts, health.
//! - [`error`]: every error variant → status and Lambda error type, in one match.
//! - [`registry`]: the control plane — validates, stores, tells the dispatcher.
//! - [`model`]: the Lambda JSON shapes.

mod account;
pub mod auth;
mod concurrency;
mod cors;
mod ember;
pub mod error;
mod events;
mod functions;
mod invoke;
mod json_protocol;
mod layers;
mod mappings;
pub mod model;
pub mod registry;
mod routes;
mod rules;
pub mod sigv4;
mod sqs;
mod urls;
mod versions;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::DefaultBodyLimit;
use axum::http::{Method, Uri};
use axum::routing::{any, get, post, put};
use bytes::Bytes;
use http_body_util::BodyExt;
use tower_service::Service;

pub use error::ApiError;
pub use registry::Registry;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub registry: Arc<Registry>,
    pub keys: Arc<auth::KeyRing>,
    pub events: ember_events::Events,
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
        .route(
            "/event-source-mappings",
            get(mappings::list).post(mappings::create),
        )
        .route(
            "/event-source-mappings/",
            get(mappings::list).post(mappings::create),
        )
        .route(
            "/event-source-mappings/{uuid}",
            get(mappings::get)
                .put(mappings::update)
                .delete(mappings::delete),
        )
        .route("/functions/{name}/invocations", post(invoke::invoke))
        .route(
            "/functions/{name}/versions",
            get(versions::list_versions).post(versions::publish),
        )
        .route(
            "/functions/{name}/aliases",
            get(versions::list_aliases).post(versions::create_alias),
        )
        .route(
            "/functions/{name}/aliases/{alias}",
            get(versions::get_alias)
                .put(versions::update_alias)
                .delete(versions::delete_alias),
        );
    let tags = Router::new().route(
        "/tags/{arn}",
        get(account::list_tags)
            .post(account::tag)
            .delete(account::untag),
    );
    let layers = Router::new()
        .route("/layers", get(layers::list))
        .route(
            "/layers/{name}/versions",
            get(layers::list_versions).post(layers::publish),
        )
        .route(
            "/layers/{name}/versions/{version}",
            get(layers::get).delete(layers::delete),
        );
    let reserve = Router::new().route(
        "/functions/{name}/concurrency",
        put(concurrency::put).delete(concurrency::delete),
    );
    let concurrency_reads = Router::new()
        .route("/functions/{name}/concurrency", get(concurrency::get))
        .route(
            "/functions/{name}/provisioned-concurrency",
            get(concurrency::get_provisioned)
                .put(concurrency::put_provisioned)
                .delete(concurrency::delete_provisioned),
        );
    let event_configs = Router::new()
        .route(
            "/functions/{name}/event-invoke-config",
            get(events::get)
                .put(events::put)
                .post(events::update)
                .delete(events::delete),
        )
        .route(
            "/functions/{name}/event-invoke-config/list",
            get(events::list),
        );
    let urls = Router::new()
        .route(
            "/functions/{name}/url",
            get(urls::get)
                .post(urls::create)
                .put(urls::update)
                .delete(urls::delete),
        )
        .route("/functions/{name}/urls", get(urls::list));
    let settings = Router::new()
        .route("/account-settings", get(account::account_settings))
        .route("/account-settings/", get(account::account_settings));
    let ember = Router::new()
        .route("/health", get(ember::health))
        .route("/keys", get(auth::list_keys).post(auth::create_key))
        .route("/keys/{id}", axum::routing::delete(auth::delete_key))
        .route("/functions/{name}/logs", get(ember::logs))
        .route("/functions/{name}/environments", get(ember::environments))
        .route("/functions/{name}/code", get(ember::code))
        .route(
            "/functions/{name}/settings",
            get(ember::get_settings).put(ember::put_settings),
        )
        .route("/usage", get(ember::usage))
        .route("/routes", get(routes::list).post(routes::create))
        .route("/routes/{id}", axum::routing::delete(routes::delete))
        .route("/stats", get(ember::stats))
        .route("/events", get(ember::events))
        .route("/artifacts/{file}", get(ember::artifact));
    Router::new()
        .nest("/2015-03-31", lambda)
        .nest("/2017-03-31", tags)
        .nest("/2016-08-19", settings)
        .nest("/2018-10-31", layers)
        .nest("/2017-10-31", reserve)
        .nest("/2019-09-30", concurrency_reads)
        .nest("/2019-09-25", event_configs)
        .nest("/2021-10-31", urls)
        .nest("/ember/v1", ember)
        .route("/metrics", get(concurrency::metrics))
        .route("/", post(json_protocol::serve))
        .fallback(unknown)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_signature,
        ))
        // Function URLs and HTTP routes are added past the signature layer: their callers
        // are checked by each URL's or route's own auth type, and the calls skip the
        // layer's work.
        .route("/url/{id}", any(urls::serve))
        .route("/url/{id}/", any(urls::serve))
        .route("/url/{id}/{*path}", any(urls::serve))
        .route("/http", any(routes::serve))
        .route("/http/", any(routes::serve))
        .route("/http/{*path}", any(routes::serve))
        // Handlers read bodies themselves, each with its own limit and error.
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

/// The API as the server serves it: a [`Connection`] per accepted connection.
#[derive(Clone)]
pub struct Front {
    router: Router,
    state: Arc<AppState>,
}

/// The whole API ([`router`]) as the server serves it: a function URL's call whose path needs
/// no decoding goes straight to its handler; every other request, with the caller's address
/// (`ConnectInfo`), goes through the router.
pub fn front(state: AppState) -> Front {
    Front {
        router: router(state.clone()),
        state: Arc::new(state),
    }
}

impl Front {
    /// The service of a connection from `peer`.
    pub fn connection(&self, peer: SocketAddr) -> Connection {
        Connection {
            router: self.router.clone(),
            state: Arc::clone(&self.state),
            peer,
        }
    }
}

/// The service of one connection from `peer`.
///
/// Function URLs are the data plane: their calls skip the router's matching, its
/// extractors and the per-request `ConnectInfo`, about a dozen allocations and a few
/// percent of the server's CPU per call. The router keeps their routes, for the paths this
/// one leaves to it (decoding, `HEAD`) and for requests made in process.
pub struct Connection {
    router: Router,
    /// One reference count for a function URL's call to hold, rather than one for each
    /// part of the state.
    state: Arc<AppState>,
    peer: SocketAddr,
}

/// The answer to one request on a [`Connection`].
pub type Served =
    Pin<Box<dyn Future<Output = Result<axum::response::Response, Infallible>> + Send>>;

impl Connection {
    /// Answers one request.
    pub fn serve(&self, mut request: axum::extract::Request) -> Served {
        if let Some((id, path)) = urls::plain_url_path(request.method(), request.uri().path()) {
            let state = Arc::clone(&self.state);
            let source_ip = urls::ip_string(self.peer.ip());
            return Box::pin(async move {
                Ok(urls::serve_url(&state, id, path, request, source_ip).await)
            });
        }
        request
            .extensions_mut()
            .insert(axum::extract::ConnectInfo(self.peer));
        Box::pin(self.router.clone().call(request))
    }
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
