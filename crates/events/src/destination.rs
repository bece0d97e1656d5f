//! Lambda's destination record: what an on-success or on-failure destination receives.
//!
//! ```json
//! { "version": "1.0", "timestamp": "2019-11-14T18:16:05.568Z",
//!   "requestContext": { "requestId": "…", "functionArn": "arn:…:function:f:$LATEST",
//!                       "condition": "RetriesExhausted", "approximateInvokeCount": 3 },
//!   "requestPayload": { … },
//!   "responseContext": { "statusCode": 200, "executedVersion": "$LATEST",
//!                        "functionError": "Handled" },
//!   "responsePayload": { "errorMessage": "…", "errorType": "…" } }
//! ```

use std::time::SystemTime;

use ember_dispatch::InvokeResult;
use serde_json::{Value, json};

/// What a record is made of.
pub struct Source<'a> {
    pub request_id: &'a str,
    /// The invoked function's ARN, qualified (`…:$LATEST` when it was not).
    pub function_arn: &'a str,
    /// `Success`, `RetriesExhausted`, `EventAgeExceeded`, …
    pub condition: &'a str,
    pub invoke_count: u32,
    pub request_payload: &'a [u8],
    /// The last attempt's result, if the function ran.
    pub result: Option<&'a InvokeResult>,
    pub timestamp: SystemTime,
}

/// A JSON document as a value, or as a string when it is not JSON.
fn document(bytes: &[u8]) -> Value {
    if bytes.is_empty() {
        return Value::Null;
    }
    serde_json::from_slice(bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
}

/// The record for `source`.
pub fn record(source: &Source<'_>) -> Value {
    let mut record = json!({
        "version": "1.0",
        "timestamp": iso_millis(source.timestamp),
        "requestContext": {
            "requestId": source.request_id,
            "functionArn": source.function_arn,
            "condition": source.condition,
            "approximateInvokeCount": source.invoke_count,
        },
        "requestPayload": document(source.request_payload),
    });
    if let Some(result) = source.result {
        let mut context = json!({
            "statusCode": 200,
            "executedVersion": result.executed_version.as_ref(),
        });
        if let Some(kind) = result.function_error {
            context["functionError"] = kind.as_str().into();
        }
        record["responseContext"] = context;
        record["responsePayload"] = document(&result.body);
    }
    record
}

/// `2019-11-14T18:16:05.568Z`.
fn iso_millis(t: SystemTime) -> String {
    // Lambda's LastModified form is `…+0000`; records use `Z`.
    ember_core::time::lambda_timestamp(t).replace("+0000", "Z")
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use ember_dispatch::FunctionError;
    use std::sync::Arc;

    #[test]
    fn a_failure_record_has_lambdas_shape() {
        let result = InvokeResult {
            request_id: "r-1".into(),
            body: Bytes::from_static(br#"{"errorMessage":"boom","errorType":"ValueError"}"#),
            function_error: Some(FunctionError::Handled),
            executed_version: Arc::from("$LATEST"),
            log_tail: None,
            timing: Default::default(),
        };
        let record = record(&Source {
            request_id: "r-1",
            function_arn: "arn:aws:lambda:us-east-1:000000000000:function:f:$LATEST",
            condition: "RetriesExhausted",
            invoke_count: 3,
            request_payload: br#"{"n":1}"#,
            result: Some(&result),
            timestamp: std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_565_821_571_234),
        });
        assert_eq!(
            record,
            json!({
                "version": "1.0",
                "timestamp": "2019-08-14T22:26:11.234Z",
                "requestContext": {
                    "requestId": "r-1",
                    "functionArn": "arn:aws:lambda:us-east-1:000000000000:function:f:$LATEST",
                    "condition": "RetriesExhausted",
                    "approximateInvokeCount": 3
                },
                "requestPayload": { "n": 1 },
                "responseContext": {
                    "statusCode": 200,
                    "executedVersion": "$LATEST",
                    "functionError": "Handled"
                },
                "responsePayload": { "errorMessage": "boom", "errorType": "ValueError" }
            })
        );
    }
}
