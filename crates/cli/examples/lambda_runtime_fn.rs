//! A function built with AWS's official Rust runtime client, the `lambda_runtime` crate,
//! exactly as its users write one. The end-to-end tests deploy this binary, unchanged, as
//! the `bootstrap` of a `provided` function.

use lambda_runtime::{Diagnostic, LambdaEvent, service_fn};
use serde_json::{Value, json};

async fn handler(event: LambdaEvent<Value>) -> Result<Value, Diagnostic> {
    let (payload, context) = event.into_parts();
    if payload.get("fail").is_some() {
        return Err(Diagnostic {
            error_type: "InvalidEvent".into(),
            error_message: "the event asked to fail".into(),
        });
    }
    Ok(json!({
        "echo": payload,
        "request_id": context.request_id,
        "arn": context.invoked_function_arn,
        "deadline_ms": context.deadline,
    }))
}

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda_runtime::run(service_fn(handler)).await
}
