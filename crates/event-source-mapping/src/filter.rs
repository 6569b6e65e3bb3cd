//! Lambda event filtering (FilterCriteria): a record is passed on when any pattern matches it.
//!
//! Supported, as documented by AWS: nested objects, arrays of allowed literal values (strings,
//! numbers, booleans, null), `{"prefix": ...}`, `{"suffix": ...}`, `{"exists": bool}` and
//! `{"anything-but": [...]}`. For Kinesis records, patterns under `data` match the decoded JSON
//! payload, as in Lambda.

use serde_json::Value;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct FilterCriteria {
    patterns: Vec<Value>,
}

#[derive(Debug, thiserror::Error)]
#[error("invalid filter pattern: {0}")]
pub struct FilterError(String);

impl FilterCriteria {
    /// Patterns as in the template's `FilterCriteria.Filters[].Pattern` (JSON strings).
    pub fn from_patterns<I: IntoIterator<Item = S>, S: AsRef<str>>(patterns: I) -> Result<Self, FilterError> {
        let patterns = patterns
            .into_iter()
            .map(|p| {
                let value: Value = serde_json::from_str(p.as_ref()).map_err(|e| FilterError(e.to_string()))?;
                if !value.is_object() {
                    return Err(FilterError(format!("{} is not a JSON object", p.as_ref())));
                }
                Ok(value)
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { patterns })
    }

    pub fn matches(&self, record: &Value) -> bool {
        self.patterns.is_empty() || self.patterns.iter().any(|p| object_matches(p, Some(record)))
    }
}

fn object_matches(pattern: &Value, value: Option<&Value>) -> bool {
    let Some(pattern) = pattern.as_object() else {
        return false;
    };
    pattern.iter().all(|(key, sub)| {
        let field = value.and_then(|v| v.get(key));
        match sub {
            Value::Object(_) => object_matches(sub, field),
            Value::Array(allowed) => allowed.iter().any(|rule| rule_matches(rule, field)),
            _ => false,
        }
    })
}

fn rule_matches(rule: &Value, field: Option<&Value>) -> bool {
    match rule {
        Value::Object(op) => {
            if let Some(exists) = op.get("exists").and_then(Value::as_bool) {
                return field.is_some() == exists;
            }
            let text = field.and_then(Value::as_str);
            if let Some(prefix) = op.get("prefix").and_then(Value::as_str) {
                return text.is_some_and(|t| t.starts_with(prefix));
            }
            if let Some(suffix) = op.get("suffix").and_then(Value::as_str) {
                return text.is_some_and(|t| t.ends_with(suffix));
            }
            if let Some(excluded) = op.get("anything-but") {
                let excluded: Vec<&Value> = match excluded {
                    Value::Array(values) => values.iter().collect(),
                    single => vec![single],
                };
                return field.is_some_and(|f| !excluded.contains(&f));
            }
            false
        }
        literal => field == Some(literal),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const OUTBOX_INSERTS: &str =
        r#"{"eventName": ["INSERT"], "dynamodb": {"NewImage": {"item_type": {"S": ["OutboxEvent"]}}}}"#;

    fn record(event_name: &str, item_type: Option<&str>) -> Value {
        let mut image = json!({ "aggregate_id": { "S": "r1" } });
        if let Some(t) = item_type {
            image["item_type"] = json!({ "S": t });
        }
        json!({ "eventName": event_name, "dynamodb": { "NewImage": image } })
    }

    #[test]
    fn the_relay_filter_passes_outbox_inserts_only() {
        let filter = FilterCriteria::from_patterns([OUTBOX_INSERTS]).unwrap();
        assert!(filter.matches(&record("INSERT", Some("OutboxEvent"))));
        assert!(!filter.matches(&record("MODIFY", Some("OutboxEvent"))));
        assert!(!filter.matches(&record("INSERT", Some("Reservation"))));
        assert!(!filter.matches(&record("INSERT", None)));
        assert!(!filter.matches(&json!({ "eventName": "REMOVE", "dynamodb": { "Keys": {} } })));
    }

    #[test]
    fn operators_and_alternatives() {
        let filter = FilterCriteria::from_patterns([
            r#"{"a": [{"prefix": "ab"}], "b": [{"exists": false}]}"#,
            r#"{"c": [{"anything-but": ["x", "y"]}], "d": [1, true, null]}"#,
        ])
        .unwrap();
        assert!(filter.matches(&json!({ "a": "abc" })));
        assert!(!filter.matches(&json!({ "a": "abc", "b": 1 })));
        assert!(filter.matches(&json!({ "c": "z", "d": null })));
        assert!(!filter.matches(&json!({ "c": "x", "d": 1 })));
        assert!(!filter.matches(&json!({ "c": "z", "d": 2 })));
    }

    #[test]
    fn no_filter_passes_everything_and_bad_patterns_are_refused() {
        assert!(FilterCriteria::default().matches(&json!({})));
        assert!(FilterCriteria::from_patterns(["[1]"]).is_err());
        assert!(FilterCriteria::from_patterns(["{oops"]).is_err());
    }
}
