//! Rules and the event bus over EventBridge's JSON protocol (`POST /` with
//! `X-Amz-Target: AWSEvents.<Operation>`, routed by [`crate::json_protocol`]): `PutRule`, `DescribeRule`, `ListRules`,
//! `DeleteRule`, `EnableRule`, `DisableRule`, `PutTargets`, `RemoveTargets`,
//! `ListTargetsByRule`, `PutEvents`. A rule has a `ScheduleExpression` or an
//! `EventPattern`; its targets are functions of this server, each sent the scheduled or
//! matching event (or the target's constant `Input`) as an asynchronous invocation.

use ember_events::BusEntry;
use ember_events::pattern::Pattern;
use ember_events::schedule::Schedule;
use ember_store::{Rule, Target};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{ApiError, Registry};

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RuleIn {
    name: String,
    schedule_expression: Option<String>,
    event_pattern: Option<String>,
    state: Option<String>,
    description: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct NameIn {
    name: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListIn {
    name_prefix: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct EntryIn {
    source: Option<String>,
    detail_type: Option<String>,
    detail: Option<String>,
    #[serde(default)]
    resources: Vec<String>,
    event_bus_name: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PutEventsIn {
    entries: Vec<EntryIn>,
}

/// Most entries per `PutEvents`, as on EventBridge.
const ENTRIES_PER_CALL: usize = 10;

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TargetIn {
    id: String,
    arn: String,
    input: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TargetsIn {
    rule: String,
    #[serde(default)]
    targets: Vec<TargetIn>,
    #[serde(default)]
    ids: Vec<String>,
}

fn rule_arn(registry: &Registry, name: &str) -> String {
    let config = registry.dispatcher().config();
    format!(
        "arn:aws:events:{}:{}:rule/{name}",
        config.region, config.account
    )
}

fn describe(registry: &Registry, r: &Rule) -> Value {
    let mut out = json!({
        "Name": r.name,
        "Arn": rule_arn(registry, &r.name),
        "State": if r.enabled { "ENABLED" } else { "DISABLED" },
        "EventBusName": "default",
    });
    if let Some(s) = &r.schedule {
        out["ScheduleExpression"] = s.clone().into();
    }
    if let Some(p) = &r.pattern {
        out["EventPattern"] = p.clone().into();
    }
    if !r.description.is_empty() {
        out["Description"] = r.description.clone().into();
    }
    out
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::Validation(format!("the request is not valid: {e}")))
}

fn not_found(name: &str) -> ApiError {
    ApiError::NotFound(format!("Rule {name} does not exist."))
}

fn validate_name(name: &str) -> Result<(), ApiError> {
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::Validation(format!(
            "rule name {name:?} must be 1 to 64 letters, digits, '.', '-' or '_'"
        )))
    }
}

/// One JSON-protocol operation, run against the store.
pub(crate) fn operation(
    registry: &Registry,
    events: &ember_events::Events,
    op: &str,
    body: &[u8],
) -> Result<Value, ApiError> {
    let store = registry.store();
    match op {
        "PutEvents" => {
            let input: PutEventsIn = parse(body)?;
            if input.entries.is_empty() || input.entries.len() > ENTRIES_PER_CALL {
                return Err(ApiError::Validation(format!(
                    "PutEvents takes 1 to {ENTRIES_PER_CALL} entries (got {})",
                    input.entries.len()
                )));
            }
            let mut refused = Vec::new();
            let entries: Vec<BusEntry> = input
                .entries
                .into_iter()
                .map(|e| {
                    let bus_ok = e.event_bus_name.as_deref().is_none_or(|b| b == "default");
                    refused.push(!bus_ok);
                    BusEntry {
                        source: e.source,
                        detail_type: e.detail_type,
                        detail: e.detail,
                        resources: e.resources,
                    }
                })
                .collect();
            let results = events
                .put_events(&entries)
                .map_err(|e| ApiError::Service(ember_core::error_chain(&e)))?;
            let mut failed = 0;
            let out: Vec<Value> = results
                .into_iter()
                .zip(refused)
                .map(|(result, bad_bus)| match result {
                    Ok(_) if bad_bus => {
                        failed += 1;
                        json!({ "ErrorCode": "InvalidArgument", "ErrorMessage": "only the default event bus exists" })
                    }
                    Ok(id) => json!({ "EventId": id }),
                    Err(why) => {
                        failed += 1;
                        json!({ "ErrorCode": "InvalidArgument", "ErrorMessage": why })
                    }
                })
                .collect();
            Ok(json!({ "FailedEntryCount": failed, "Entries": out }))
        }
        "PutRule" => {
            let input: RuleIn = parse(body)?;
            validate_name(&input.name)?;
            match (&input.schedule_expression, &input.event_pattern) {
                (Some(schedule), None) => {
                    Schedule::parse(schedule).map_err(|e| ApiError::Validation(e.to_string()))?;
                }
                (None, Some(pattern)) => {
                    Pattern::parse(pattern).map_err(|e| ApiError::Validation(e.to_string()))?;
                }
                _ => {
                    return Err(ApiError::Validation(
                        "a rule takes either a ScheduleExpression (rate(5 minutes)) or an EventPattern"
                            .into(),
                    ));
                }
            }
            let enabled = match input.state.as_deref() {
                None | Some("ENABLED") => true,
                Some("DISABLED") => false,
                Some(other) => {
                    return Err(ApiError::Validation(format!(
                        "State must be ENABLED or DISABLED (got {other:?})"
                    )));
                }
            };
            store.put_rule(&Rule {
                name: input.name.clone(),
                schedule: input.schedule_expression,
                pattern: input.event_pattern,
                enabled,
                description: input.description.unwrap_or_default(),
                created_ms: ember_events::now_ms(),
                last_fired_ms: None,
            })?;
            Ok(json!({ "RuleArn": rule_arn(registry, &input.name) }))
        }
        "DescribeRule" => {
            let input: NameIn = parse(body)?;
            let rule = store
                .rule(&input.name)?
                .ok_or_else(|| not_found(&input.name))?;
            Ok(describe(registry, &rule))
        }
        "ListRules" => {
            let input: ListIn = parse(body)?;
            let rules: Vec<Value> = store
                .rules()?
                .iter()
                .filter(|r| {
                    input
                        .name_prefix
                        .as_deref()
                        .is_none_or(|p| r.name.starts_with(p))
                })
                .map(|r| describe(registry, r))
                .collect();
            Ok(json!({ "Rules": rules }))
        }
        "DeleteRule" => {
            let input: NameIn = parse(body)?;
            store
                .rule(&input.name)?
                .ok_or_else(|| not_found(&input.name))?;
            if !store.targets(&input.name)?.is_empty() {
                return Err(ApiError::Validation(
                    "Rule can't be deleted since it has targets; remove them first".into(),
                ));
            }
            store.delete_rule(&input.name)?;
            Ok(json!({}))
        }
        "EnableRule" | "DisableRule" => {
            let input: NameIn = parse(body)?;
            if !store.set_rule_enabled(&input.name, op == "EnableRule")? {
                return Err(not_found(&input.name));
            }
            Ok(json!({}))
        }
        "PutTargets" => {
            let input: TargetsIn = parse(body)?;
            store
                .rule(&input.rule)?
                .ok_or_else(|| not_found(&input.rule))?;
            let mut targets = Vec::new();
            let mut failed = Vec::new();
            for t in input.targets {
                let input_ok = t
                    .input
                    .as_deref()
                    .is_none_or(|i| serde_json::from_str::<Value>(i).is_ok());
                let checked = if input_ok {
                    registry
                        .check_sink(&t.arn, false)
                        .map_err(|e| e.to_string())
                } else {
                    Err("Input must be a JSON document".to_owned())
                };
                if let Err(message) = checked {
                    failed.push(json!({
                        "TargetId": t.id,
                        "ErrorCode": "ValidationException",
                        "ErrorMessage": message,
                    }));
                    continue;
                }
                targets.push(Target {
                    id: t.id,
                    arn: t.arn,
                    input: t.input,
                });
            }
            store.put_targets(&input.rule, &targets)?;
            Ok(json!({ "FailedEntryCount": failed.len(), "FailedEntries": failed }))
        }
        "RemoveTargets" => {
            let input: TargetsIn = parse(body)?;
            store
                .rule(&input.rule)?
                .ok_or_else(|| not_found(&input.rule))?;
            let missing = store.remove_targets(&input.rule, &input.ids)?;
            let failed: Vec<Value> = missing
                .iter()
                .map(|id| json!({ "TargetId": id, "ErrorCode": "ResourceNotFoundException", "ErrorMessage": "no such target" }))
                .collect();
            Ok(json!({ "FailedEntryCount": failed.len(), "FailedEntries": failed }))
        }
        "ListTargetsByRule" => {
            let input: TargetsIn = parse(body)?;
            store
                .rule(&input.rule)?
                .ok_or_else(|| not_found(&input.rule))?;
            let targets: Vec<Value> = store
                .targets(&input.rule)?
                .into_iter()
                .map(|t| {
                    let mut v = json!({ "Id": t.id, "Arn": t.arn });
                    if let Some(i) = t.input {
                        v["Input"] = i.into();
                    }
                    v
                })
                .collect();
            Ok(json!({ "Targets": targets }))
        }
        other => Err(ApiError::UnknownOperation {
            method: "POST".into(),
            path: format!("/ (X-Amz-Target: AWSEvents.{other})"),
        }),
    }
}
