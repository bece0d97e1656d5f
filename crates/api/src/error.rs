//! Every error the API answers with, and the one place each becomes an HTTP status and a
//! Lambda error type.
//!
//! Lambda clients (the AWS CLI, boto3) read the type from `x-amzn-ErrorType` and the text
//! from the JSON body's `message`, and raise typed exceptions from them.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use ember_core::ValidationError;
use ember_dispatch::DispatchError;
use ember_store::{ArchiveError, StoreError};

use crate::sigv4::AuthError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("Function not found: {0}")]
    FunctionNotFound(String),
    #[error("{0}")]
    NotFound(String),
    #[error("No Provisioned Concurrency Config found for this function: {0}")]
    ProvisionedConfigNotFound(String),
    #[error("{0}")]
    InvalidParameter(String),
    #[error("{0}")]
    InvalidRequestContent(String),
    /// A bad request to a JSON-protocol service (EventBridge), in its own error type.
    #[error("{0}")]
    Validation(String),
    #[error("Function already exist: {0}")]
    FunctionExists(String),
    #[error("{0}")]
    Conflict(String),
    /// An invocation payload over the synchronous limit.
    #[error("Request must be smaller than {0} bytes for the InvokeFunction operation")]
    RequestTooLarge(usize),
    /// A control-plane request body (a package) over its limit.
    #[error("{0}")]
    EntityTooLarge(String),
    #[error("{message}")]
    Throttled {
        throttle: ember_policy::Throttle,
        message: String,
    },
    #[error("{0}")]
    PreconditionFailed(String),
    #[error("Unknown operation {method} {path}")]
    UnknownOperation { method: String, path: String },
    #[error("{0}")]
    Service(String),
    #[error("{0}")]
    Auth(crate::sigv4::AuthError),
    /// An error of the queue service, with its JSON type (`QueueDoesNotExist`) and the
    /// query-protocol code the SDKs raise it under (`AWS.SimpleQueueService.NonExistentQueue`).
    #[error("{message}")]
    Queue {
        kind: &'static str,
        code: &'static str,
        message: String,
    },
}

impl ApiError {
    fn parts(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::FunctionNotFound(_) | ApiError::NotFound(_) => {
                (StatusCode::NOT_FOUND, "ResourceNotFoundException")
            }
            ApiError::ProvisionedConfigNotFound(_) => (
                StatusCode::NOT_FOUND,
                "ProvisionedConcurrencyConfigNotFoundException",
            ),
            ApiError::InvalidParameter(_) => {
                (StatusCode::BAD_REQUEST, "InvalidParameterValueException")
            }
            ApiError::Validation(_) => (StatusCode::BAD_REQUEST, "ValidationException"),
            ApiError::InvalidRequestContent(_) => {
                (StatusCode::BAD_REQUEST, "InvalidRequestContentException")
            }
            ApiError::FunctionExists(_) | ApiError::Conflict(_) => {
                (StatusCode::CONFLICT, "ResourceConflictException")
            }
            ApiError::RequestTooLarge(_) => {
                (StatusCode::PAYLOAD_TOO_LARGE, "RequestTooLargeException")
            }
            ApiError::EntityTooLarge(_) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "RequestEntityTooLargeException",
            ),
            ApiError::Throttled { .. } => {
                (StatusCode::TOO_MANY_REQUESTS, "TooManyRequestsException")
            }
            ApiError::PreconditionFailed(_) => (
                StatusCode::PRECONDITION_FAILED,
                "PreconditionFailedException",
            ),
            ApiError::UnknownOperation { .. } => {
                (StatusCode::NOT_FOUND, "UnknownOperationException")
            }
            ApiError::Service(_) => (StatusCode::INTERNAL_SERVER_ERROR, "ServiceException"),
            ApiError::Queue { kind, .. } => (StatusCode::BAD_REQUEST, kind),
            ApiError::Auth(AuthError::Missing | AuthError::UnknownKey(_)) => {
                (StatusCode::FORBIDDEN, "UnrecognizedClientException")
            }
            ApiError::Auth(
                AuthError::Malformed(_)
                | AuthError::Scope { .. }
                | AuthError::Expired(_)
                | AuthError::Mismatch,
            ) => (StatusCode::FORBIDDEN, "InvalidSignatureException"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, kind) = self.parts();
        // `__type` is where JSON-protocol clients (EventBridge, SQS) read the error code;
        // REST clients (Lambda) read the header, and ignore it.
        let mut body = serde_json::json!({
            "Type": if status.is_server_error() { "Service" } else { "User" },
            "__type": kind,
            "message": self.to_string(),
        });
        if let ApiError::Queue { kind, .. } = &self {
            body["__type"] = format!("com.amazonaws.sqs#{kind}").into();
        }
        let mut retry_after = None;
        if let ApiError::Throttled { throttle, .. } = &self {
            body["Reason"] = throttle.reason().into();
            retry_after = Some(throttle.retry_after().as_secs());
        }
        if status.is_server_error() {
            tracing::error!(error = %self, "request failed");
        }
        let mut response = (status, axum::Json(body)).into_response();
        response
            .headers_mut()
            .insert("x-amzn-ErrorType", HeaderValue::from_static(kind));
        if let ApiError::Queue { code, .. } = &self
            && let Ok(v) = HeaderValue::from_str(&format!("{code};Sender"))
        {
            response.headers_mut().insert("x-amzn-query-error", v);
        }
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert("Retry-After", HeaderValue::from(seconds));
        }
        response
    }
}

impl From<ValidationError> for ApiError {
    fn from(e: ValidationError) -> Self {
        ApiError::InvalidParameter(e.to_string())
    }
}

impl From<ember_core::arn::RefError> for ApiError {
    fn from(e: ember_core::arn::RefError) -> Self {
        ApiError::InvalidParameter(e.to_string())
    }
}

impl From<ArchiveError> for ApiError {
    fn from(e: ArchiveError) -> Self {
        match e {
            ArchiveError::ZipTooLarge(_) => ApiError::EntityTooLarge(e.to_string()),
            ArchiveError::Io(io) => ApiError::Service(format!("could not store the package: {io}")),
            ArchiveError::NotAZip(_)
            | ArchiveError::UnzippedTooLarge
            | ArchiveError::TooManyEntries
            | ArchiveError::PathTraversal(_)
            | ArchiveError::LinkOutside(..)
            | ArchiveError::BelowLink(_)
            | ArchiveError::Duplicate(_)
            | ArchiveError::Encrypted(_)
            | ArchiveError::Bomb(_) => ApiError::InvalidParameter(e.to_string()),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Exists(name) => ApiError::FunctionExists(name),
            StoreError::NotFound(name) => ApiError::FunctionNotFound(name),
            StoreError::AliasExists(name) => {
                ApiError::Conflict(format!("Alias already exists: {name}"))
            }
            StoreError::AliasNotFound(name) => {
                ApiError::NotFound(format!("Alias not found: {name}"))
            }
            StoreError::Sqlite(_) | StoreError::Corrupt(_) => {
                ApiError::Service(ember_core::error_chain(&e))
            }
        }
    }
}

impl From<DispatchError> for ApiError {
    fn from(e: DispatchError) -> Self {
        match e {
            DispatchError::FunctionNotFound(name) => ApiError::FunctionNotFound(name),
            DispatchError::Throttled(throttle) => ApiError::Throttled {
                message: e.to_string(),
                throttle,
            },
            DispatchError::Sandbox(_) | DispatchError::Io(_) | DispatchError::Internal(_) => {
                ApiError::Service(ember_core::error_chain(&e))
            }
        }
    }
}
