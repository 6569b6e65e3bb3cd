//! Every property of template.yaml that AWS bounds stays within its documented limit, so a deploy
//! never fails on one (a Description of 259 characters once rolled a first deploy back). A value
//! given by a parameter is checked over everything the parameter allows; an `!If` on both branches.
//!
//! Limits from the AWS documentation: Lambda quotas and CreateFunction / CreateEventSourceMapping,
//! SQS CreateQueue attributes, Kinesis and DynamoDB quotas, CloudWatch PutMetricAlarm,
//! EventBridge PutRule, CloudWatch Logs PutRetentionPolicy, and CloudFormation's template quotas.

use serde_yaml_ng::Value;
use std::path::Path;

/// Inclusive bounds of a numeric property.
#[derive(Clone, Copy)]
struct Range(f64, f64);

/// What a template value can be: the numbers and texts it takes for every parameter value.
enum Possible {
    Numbers(Vec<f64>),
    /// A parameter with bounds: every number from min to max.
    Between(f64, f64),
    Texts(Vec<String>),
    /// Another intrinsic (a resource's name or ARN): not known before the deploy.
    Unknown,
}

fn possible(template: &Value, value: &Value) -> Possible {
    match value {
        Value::Number(n) => Possible::Numbers(vec![n.as_f64().unwrap_or(f64::NAN)]),
        Value::String(s) => match s.parse::<f64>() {
            Ok(n) => Possible::Numbers(vec![n]),
            Err(_) => Possible::Texts(vec![s.clone()]),
        },
        Value::Bool(b) => Possible::Texts(vec![b.to_string()]),
        Value::Tagged(tagged) if tagged.tag == "Ref" => {
            let name = tagged.value.as_str().unwrap_or_default();
            let Some(parameter) = template["Parameters"].get(name) else {
                return Possible::Unknown;
            };
            if let Some(allowed) = parameter["AllowedValues"].as_sequence() {
                let values: Vec<Value> = allowed.clone();
                return merge(values.iter().map(|v| possible(template, v)));
            }
            match (parameter["MinValue"].as_f64(), parameter["MaxValue"].as_f64()) {
                (Some(min), Some(max)) => Possible::Between(min, max),
                // A number parameter open at one end can take anything on that side.
                (Some(min), None) => Possible::Between(min, f64::INFINITY),
                (None, Some(max)) => Possible::Between(f64::NEG_INFINITY, max),
                (None, None) => Possible::Unknown,
            }
        }
        Value::Tagged(tagged) if tagged.tag == "If" => {
            let branches = tagged.value.as_sequence().map(|s| s[1..].to_vec()).unwrap_or_default();
            merge(branches.iter().map(|v| possible(template, v)))
        }
        _ => Possible::Unknown,
    }
}

fn merge(all: impl Iterator<Item = Possible>) -> Possible {
    let (mut numbers, mut texts) = (Vec::new(), Vec::new());
    for one in all {
        match one {
            Possible::Numbers(n) => numbers.extend(n),
            Possible::Between(min, max) => numbers.extend([min, max]),
            Possible::Texts(t) => texts.extend(t),
            Possible::Unknown => return Possible::Unknown,
        }
    }
    if texts.is_empty() {
        Possible::Numbers(numbers)
    } else {
        Possible::Texts(texts)
    }
}

/// Collects what breaks a limit, one line each.
struct Limits<'a> {
    template: &'a Value,
    violations: Vec<String>,
}

impl Limits<'_> {
    fn number(&mut self, at: &str, value: Option<&Value>, Range(min, max): Range) {
        let Some(value) = value else { return };
        let numbers = match possible(self.template, value) {
            Possible::Numbers(n) => n,
            Possible::Between(low, high) => vec![low, high],
            Possible::Texts(t) => {
                self.violations.push(format!("{at}: {t:?} is not a number"));
                return;
            }
            Possible::Unknown => return,
        };
        for n in numbers {
            if !(min..=max).contains(&n) {
                self.violations.push(format!("{at}: {n} is outside {min}..={max}"));
            }
        }
    }

    fn one_of(&mut self, at: &str, value: Option<&Value>, allowed: &[f64]) {
        let Some(value) = value else { return };
        match possible(self.template, value) {
            Possible::Numbers(numbers) => {
                for n in numbers.into_iter().filter(|n| !allowed.contains(n)) {
                    self.violations.push(format!("{at}: {n} is not one of {allowed:?}"));
                }
            }
            Possible::Between(low, high) => self
                .violations
                .push(format!("{at}: any of {low}..={high}, but only {allowed:?} are allowed")),
            _ => {}
        }
    }

    fn text(&mut self, at: &str, value: Option<&Value>, max_chars: usize) {
        let Some(value) = value else { return };
        if let Possible::Texts(texts) = possible(self.template, value) {
            for text in texts.into_iter().filter(|t| t.chars().count() > max_chars) {
                self.violations.push(format!(
                    "{at}: {} characters, at most {max_chars} allowed",
                    text.chars().count()
                ));
            }
        }
    }

    fn count(&mut self, at: &str, value: Option<&Value>, max: usize) {
        let n = value.and_then(|v| v.as_sequence().map(Vec::len).or(v.as_mapping().map(|m| m.len())));
        if let Some(n) = n.filter(|n| *n > max) {
            self.violations
                .push(format!("{at}: {n} entries, at most {max} allowed"));
        }
    }
}

/// A resource name's longest physical form CloudFormation may give it (stack name, logical id,
/// suffix), counted for an environment variable whose value is not known before the deploy.
const UNKNOWN_VALUE_CHARS: usize = 255;

/// Every limit breach in `template`, one line each.
fn limit_violations(template: &Value) -> Vec<String> {
    let mut limits = Limits {
        template,
        violations: Vec::new(),
    };
    limits.text("Description", template.get("Description"), 1024);
    limits.count("Parameters", template.get("Parameters"), 200);
    limits.count("Resources", template.get("Resources"), 500);
    limits.count("Outputs", template.get("Outputs"), 200);
    for (name, parameter) in template["Parameters"].as_mapping().into_iter().flatten() {
        let at = format!("Parameters.{}", name.as_str().unwrap_or_default());
        limits.text(&format!("{at}.Description"), parameter.get("Description"), 4000);
        if let (Some(default), Some(min), Some(max)) = (
            parameter["Default"].as_f64(),
            parameter["MinValue"].as_f64(),
            parameter["MaxValue"].as_f64(),
        ) && !(min..=max).contains(&default)
        {
            limits
                .violations
                .push(format!("{at}.Default: {default} is outside its own {min}..={max}"));
        }
    }
    let globals = &template["Globals"]["Function"];
    for (id, resource) in template["Resources"].as_mapping().into_iter().flatten() {
        let id = id.as_str().unwrap_or_default();
        if id.len() > 255 || !id.chars().all(|c| c.is_ascii_alphanumeric()) {
            limits
                .violations
                .push(format!("{id}: a logical id is at most 255 letters and digits"));
        }
        let properties = &resource["Properties"];
        let at = |property: &str| format!("{id}.{property}");
        let own_or_global = |property: &str| properties.get(property).or(globals.get(property));
        match resource["Type"].as_str().unwrap_or_default() {
            "AWS::Serverless::Function" | "AWS::Lambda::Function" => {
                limits.text(&at("Description"), properties.get("Description"), 256);
                limits.number(&at("Timeout"), own_or_global("Timeout"), Range(1.0, 900.0));
                limits.number(&at("MemorySize"), own_or_global("MemorySize"), Range(128.0, 10240.0));
                let variables = [
                    &globals["Environment"]["Variables"],
                    &properties["Environment"]["Variables"],
                ];
                let size: usize = variables
                    .iter()
                    .filter_map(|v| v.as_mapping())
                    .flatten()
                    .map(|(key, value)| {
                        let value_chars = match possible(template, value) {
                            Possible::Texts(t) => t.iter().map(String::len).max().unwrap_or(0),
                            Possible::Numbers(n) => n.iter().map(|n| n.to_string().len()).max().unwrap_or(0),
                            _ => UNKNOWN_VALUE_CHARS,
                        };
                        key.as_str().unwrap_or_default().len() + value_chars
                    })
                    .sum();
                if size > 4096 {
                    limits
                        .violations
                        .push(format!("{id}: environment of up to {size} bytes, Lambda allows 4 KB"));
                }
                for (event, definition) in properties["Events"].as_mapping().into_iter().flatten() {
                    let description = definition["Properties"].get("Description");
                    limits.text(
                        &format!("{id}.Events.{}.Description", event.as_str().unwrap_or_default()),
                        description,
                        512,
                    );
                }
            }
            "AWS::Lambda::EventSourceMapping" => {
                limits.number(&at("BatchSize"), properties.get("BatchSize"), Range(1.0, 10000.0));
                limits.number(
                    &at("MaximumBatchingWindowInSeconds"),
                    properties.get("MaximumBatchingWindowInSeconds"),
                    Range(0.0, 300.0),
                );
                limits.number(
                    &at("ParallelizationFactor"),
                    properties.get("ParallelizationFactor"),
                    Range(1.0, 10.0),
                );
                limits.number(
                    &at("MaximumRetryAttempts"),
                    properties.get("MaximumRetryAttempts"),
                    Range(-1.0, 10000.0),
                );
                let age = properties.get("MaximumRecordAgeInSeconds");
                if let Some(Possible::Numbers(ages)) = age.map(|a| possible(template, a)) {
                    for a in ages
                        .into_iter()
                        .filter(|a| *a != -1.0 && !(60.0..=604800.0).contains(a))
                    {
                        limits.violations.push(format!(
                            "{id}.MaximumRecordAgeInSeconds: {a} is neither -1 nor 60..=604800"
                        ));
                    }
                }
                let filters = properties["FilterCriteria"].get("Filters");
                limits.count(&at("FilterCriteria.Filters"), filters, 5);
                for filter in filters.and_then(Value::as_sequence).into_iter().flatten() {
                    limits.text(&at("FilterCriteria.Filters.Pattern"), filter.get("Pattern"), 4096);
                }
            }
            "AWS::SQS::Queue" => {
                limits.number(
                    &at("MessageRetentionPeriod"),
                    properties.get("MessageRetentionPeriod"),
                    Range(60.0, 1_209_600.0),
                );
                limits.number(
                    &at("VisibilityTimeout"),
                    properties.get("VisibilityTimeout"),
                    Range(0.0, 43_200.0),
                );
                limits.number(&at("DelaySeconds"), properties.get("DelaySeconds"), Range(0.0, 900.0));
                limits.number(
                    &at("MaximumMessageSize"),
                    properties.get("MaximumMessageSize"),
                    Range(1024.0, 1_048_576.0),
                );
            }
            "AWS::Kinesis::Stream" => {
                limits.number(
                    &at("RetentionPeriodHours"),
                    properties.get("RetentionPeriodHours"),
                    Range(24.0, 8760.0),
                );
                limits.number(&at("ShardCount"), properties.get("ShardCount"), Range(1.0, 500.0));
            }
            "AWS::DynamoDB::Table" => {
                limits.count(
                    &at("GlobalSecondaryIndexes"),
                    properties.get("GlobalSecondaryIndexes"),
                    20,
                );
                limits.count(&at("LocalSecondaryIndexes"), properties.get("LocalSecondaryIndexes"), 5);
            }
            "AWS::Logs::LogGroup" => limits.one_of(
                &at("RetentionInDays"),
                properties.get("RetentionInDays"),
                &[
                    1.0, 3.0, 5.0, 7.0, 14.0, 30.0, 60.0, 90.0, 120.0, 150.0, 180.0, 365.0, 400.0, 545.0, 731.0,
                    1096.0, 1827.0, 2192.0, 2557.0, 2922.0, 3288.0, 3653.0,
                ],
            ),
            "AWS::CloudWatch::Alarm" => {
                limits.text(&at("AlarmDescription"), properties.get("AlarmDescription"), 1024);
                let period = properties["Period"].as_f64().unwrap_or(60.0);
                if !(period == 10.0 || period == 30.0 || (period >= 60.0 && period % 60.0 == 0.0)) {
                    limits
                        .violations
                        .push(format!("{id}.Period: {period} is not 10, 30 or a multiple of 60"));
                }
                let evaluations = properties["EvaluationPeriods"].as_f64().unwrap_or(1.0);
                if evaluations * period > 86_400.0 {
                    limits
                        .violations
                        .push(format!("{id}: EvaluationPeriods × Period is over one day"));
                }
                if properties["DatapointsToAlarm"]
                    .as_f64()
                    .is_some_and(|d| d > evaluations)
                {
                    limits
                        .violations
                        .push(format!("{id}: DatapointsToAlarm exceeds EvaluationPeriods"));
                }
            }
            _ => {}
        }
    }
    for (name, output) in template["Outputs"].as_mapping().into_iter().flatten() {
        limits.text(
            &format!("Outputs.{}.Description", name.as_str().unwrap_or_default()),
            output.get("Description"),
            1024,
        );
    }
    limits.violations
}

fn template_text() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../template.yaml")).expect("template.yaml")
}

#[test]
fn every_bounded_property_of_the_template_is_within_its_aws_limit() {
    let template: Value = serde_yaml_ng::from_str(&template_text()).expect("template.yaml parses");
    let violations = limit_violations(&template);
    assert!(violations.is_empty(), "{violations:#?}");
}

#[test]
fn the_template_fits_cloudformations_limit_for_a_template_in_s3() {
    // Over 51,200 bytes a template must be uploaded to S3 (sam deploy and
    // scripts/deploy-localstack.sh both do); there it may have up to 1 MB.
    let bytes = template_text().len();
    assert!(
        bytes <= 1_000_000,
        "template.yaml has {bytes} bytes, over CloudFormation's 1 MB"
    );
}

#[test]
fn a_property_over_its_limit_is_reported() {
    // The template as it was when a first deploy failed, and a few more breaches.
    let text = template_text()
        .replacen(
            "    Properties:\n      Description: Publishes outbox inserts",
            &format!(
                "    Properties:\n      Description: {}\n      Timeout: 901\n      Zzz: Publishes outbox inserts",
                "x".repeat(259)
            ),
            1,
        )
        .replacen(
            "      MessageRetentionPeriod: 1209600",
            "      MessageRetentionPeriod: 1209601",
            1,
        )
        .replacen("      BatchSize: 100", "      BatchSize: 10001", 1)
        .replacen(
            "    MaxValue: 10\n    Description: Concurrent",
            "    MaxValue: 11\n    Description: Concurrent",
            1,
        );
    let template: Value = serde_yaml_ng::from_str(&text).expect("the changed template parses");
    let violations = limit_violations(&template).join("\n");
    for expected in [
        "RelayFunction.Description: 259 characters, at most 256 allowed",
        "RelayFunction.Timeout: 901 is outside 1..=900",
        "RelayDeadLetterQueue.MessageRetentionPeriod: 1209601 is outside 60..=1209600",
        "RelayEventSourceMapping.BatchSize: 10001 is outside 1..=10000",
        "ProjectorEventSourceMapping.ParallelizationFactor: 11 is outside 1..=10",
    ] {
        assert!(violations.contains(expected), "missing {expected:?} in:\n{violations}");
    }
}
