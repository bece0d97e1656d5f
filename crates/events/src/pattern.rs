//! EventBridge event patterns: which events a rule routes. A pure function of the pattern
//! and the event.
//!
//! A pattern is a JSON object whose keys name fields of the event (nested objects name
//! nested fields) and whose leaves are arrays of matchers; an event matches when every key
//! does, and a field matches when any of its matchers does (for an array field, when any
//! element does). Matchers: a value (exact), `{"prefix": s}`, `{"suffix": s}`,
//! `{"equals-ignore-case": s}`, `{"anything-but": v | [v…] | {"prefix": s}}`,
//! `{"numeric": [op, n, (op, n)]}` with `<`, `<=`, `=`, `>=`, `>`, and `{"exists": bool}`.

use serde_json::{Map, Value};

/// A validated pattern.
#[derive(Debug, Clone, PartialEq)]
pub struct Pattern(Map<String, Value>);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PatternError(String);

fn err(text: impl Into<String>) -> PatternError {
    PatternError(text.into())
}

impl Pattern {
    pub fn parse(text: &str) -> Result<Pattern, PatternError> {
        let value: Value = serde_json::from_str(text)
            .map_err(|e| err(format!("the event pattern is not JSON: {e}")))?;
        let Value::Object(map) = value else {
            return Err(err("an event pattern is a JSON object"));
        };
        if map.is_empty() {
            return Err(err("an event pattern needs at least one field"));
        }
        check_object(&map, "")?;
        Ok(Pattern(map))
    }

    pub fn matches(&self, event: &Value) -> bool {
        object_matches(&self.0, Some(event))
    }
}

fn check_object(map: &Map<String, Value>, at: &str) -> Result<(), PatternError> {
    for (key, value) in map {
        let path = format!("{at}{key}");
        match value {
            Value::Object(inner) => check_object(inner, &format!("{path}."))?,
            Value::Array(matchers) => {
                if matchers.is_empty() {
                    return Err(err(format!("{path}: a field's matchers cannot be empty")));
                }
                for m in matchers {
                    check_matcher(m, &path)?;
                }
            }
            _ => {
                return Err(err(format!(
                    "{path}: a field's matchers are an array (e.g. [\"value\"] or [{{\"prefix\": \"a\"}}])"
                )));
            }
        }
    }
    Ok(())
}

fn check_matcher(m: &Value, path: &str) -> Result<(), PatternError> {
    let Value::Object(rule) = m else {
        return match m {
            Value::Array(_) => Err(err(format!("{path}: matchers cannot be nested arrays"))),
            _ => Ok(()),
        };
    };
    let (kind, arg) = match rule.iter().next() {
        Some(pair) if rule.len() == 1 => pair,
        _ => return Err(err(format!("{path}: a matcher object has exactly one key"))),
    };
    let ok = match kind.as_str() {
        "prefix" | "suffix" | "equals-ignore-case" => arg.is_string(),
        "exists" => arg.is_boolean(),
        "anything-but" => match arg {
            Value::Object(inner) => {
                inner.len() == 1 && inner.get("prefix").is_some_and(Value::is_string)
            }
            Value::Array(values) => values.iter().all(|v| !v.is_object() && !v.is_array()),
            _ => true,
        },
        "numeric" => numeric_bounds(arg).is_some(),
        other => {
            return Err(err(format!(
                "{path}: the matcher {other:?} is not supported (use prefix, suffix, equals-ignore-case, anything-but, numeric or exists)"
            )));
        }
    };
    if ok {
        Ok(())
    } else {
        Err(err(format!(
            "{path}: the {kind} matcher's argument is not valid"
        )))
    }
}

/// `[op, n]` or `[op, n, op, n]`.
fn numeric_bounds(arg: &Value) -> Option<Vec<(String, f64)>> {
    let items = arg.as_array()?;
    if items.is_empty() || items.len() % 2 != 0 || items.len() > 4 {
        return None;
    }
    items
        .chunks(2)
        .map(|pair| {
            let op = pair[0].as_str()?;
            let n = pair[1].as_f64()?;
            matches!(op, "<" | "<=" | "=" | ">=" | ">").then(|| (op.to_owned(), n))
        })
        .collect()
}

fn object_matches(pattern: &Map<String, Value>, event: Option<&Value>) -> bool {
    pattern.iter().all(|(key, want)| {
        let field = event.and_then(|e| e.get(key));
        match want {
            Value::Object(inner) => object_matches(inner, field),
            Value::Array(matchers) => field_matches(matchers, field),
            _ => false,
        }
    })
}

fn field_matches(matchers: &[Value], field: Option<&Value>) -> bool {
    let values: Vec<&Value> = match field {
        Some(Value::Array(items)) => items.iter().collect(),
        Some(v) => vec![v],
        None => Vec::new(),
    };
    matchers.iter().any(|m| match m {
        Value::Object(rule) => {
            if let Some(exists) = rule.get("exists").and_then(Value::as_bool) {
                return exists == field.is_some();
            }
            values.iter().any(|v| rule_matches(rule, v))
        }
        literal => values.contains(&literal),
    })
}

fn rule_matches(rule: &Map<String, Value>, value: &Value) -> bool {
    let Some((kind, arg)) = rule.iter().next() else {
        return false;
    };
    let text = value.as_str();
    match kind.as_str() {
        "prefix" => text
            .zip(arg.as_str())
            .is_some_and(|(t, p)| t.starts_with(p)),
        "suffix" => text.zip(arg.as_str()).is_some_and(|(t, s)| t.ends_with(s)),
        "equals-ignore-case" => text
            .zip(arg.as_str())
            .is_some_and(|(t, s)| t.eq_ignore_ascii_case(s)),
        "anything-but" => match arg {
            Value::Object(inner) => {
                let prefix = inner.get("prefix").and_then(Value::as_str).unwrap_or("");
                text.is_some_and(|t| !t.starts_with(prefix))
            }
            Value::Array(values) => !values.contains(value),
            single => single != value,
        },
        "numeric" => {
            let (Some(n), Some(bounds)) = (value.as_f64(), numeric_bounds(arg)) else {
                return false;
            };
            bounds.iter().all(|(op, bound)| match op.as_str() {
                "<" => n < *bound,
                "<=" => n <= *bound,
                "=" => n == *bound,
                ">=" => n >= *bound,
                _ => n > *bound,
            })
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event() -> Value {
        json!({
            "source": "shop.orders",
            "detail-type": "Order Placed",
            "resources": ["arn:x:1", "arn:x:2"],
            "detail": { "total": 42.5, "state": "NEW", "customer": { "tier": "gold" }, "note": null }
        })
    }

    fn matches(pattern: Value) -> bool {
        Pattern::parse(&pattern.to_string())
            .unwrap()
            .matches(&event())
    }

    #[test]
    fn each_matcher_does_what_eventbridge_says() {
        assert!(matches(json!({ "source": ["shop.orders"] })));
        assert!(!matches(json!({ "source": ["shop.returns"] })));
        assert!(matches(json!({ "source": ["other", "shop.orders"] })));
        assert!(matches(json!({ "source": [{ "prefix": "shop." }] })));
        assert!(matches(json!({ "detail-type": [{ "suffix": "Placed" }] })));
        assert!(matches(
            json!({ "detail-type": [{ "equals-ignore-case": "order placed" }] })
        ));
        assert!(matches(
            json!({ "detail": { "state": [{ "anything-but": "CANCELLED" }] } })
        ));
        assert!(!matches(
            json!({ "detail": { "state": [{ "anything-but": ["NEW", "OLD"] }] } })
        ));
        assert!(!matches(
            json!({ "source": [{ "anything-but": { "prefix": "shop" } }] })
        ));
        assert!(matches(
            json!({ "detail": { "total": [{ "numeric": [">", 40, "<=", 42.5] }] } })
        ));
        assert!(!matches(
            json!({ "detail": { "total": [{ "numeric": ["<", 10] }] } })
        ));
        assert!(matches(
            json!({ "detail": { "customer": { "tier": ["gold"] } } })
        ));
        assert!(matches(
            json!({ "detail": { "missing": [{ "exists": false }] } })
        ));
        assert!(!matches(
            json!({ "detail": { "state": [{ "exists": false }] } })
        ));
        assert!(matches(json!({ "detail": { "note": [null] } })));
        // An array field matches when any element does.
        assert!(matches(json!({ "resources": ["arn:x:2"] })));
        // Every key must match.
        assert!(!matches(
            json!({ "source": ["shop.orders"], "detail-type": ["Other"] })
        ));
    }

    #[test]
    fn bad_patterns_say_what_is_wrong() {
        for (bad, says) in [
            (json!({ "source": "shop" }), "array"),
            (json!({ "source": [] }), "empty"),
            (json!({ "source": [{ "wildcard": "*" }] }), "not supported"),
            (
                json!({ "detail": { "n": [{ "numeric": ["~", 1] }] } }),
                "not valid",
            ),
            (json!({}), "at least one"),
        ] {
            let e = Pattern::parse(&bad.to_string()).unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
        assert!(Pattern::parse("[1]").is_err());
    }
}
