//! template.yaml as CloudFormation reads it for one set of parameters: its Rules, its Conditions,
//! and the stack they leave (resources whose condition is false dropped, each `Fn::If` replaced
//! by its branch, `AWS::NoValue` removed, a `Ref` to a parameter or a pseudo parameter replaced
//! by its value, and a Join, Split or Sub of known values replaced by its result). The functions
//! are the ones AWS documents for rules and conditions (Fn::Equals, Fn::Not, Fn::And, Fn::Or,
//! Fn::Contains, Fn::Join, Condition, Ref); anything else stays as written.
//!
//! The static template tests (devstack) deploy it in imagination with placeholder names; the
//! end-to-end suite reads a stack LocalStack deployed with the parameters that stack was given.

use serde_yaml_ng::value::TaggedValue;
use serde_yaml_ng::{Mapping, Value};
use std::collections::HashMap;
use std::path::Path;

/// Parameters a Kafka deployment needs (the Rule KafkaNeedsTheClusterAndItsNetwork), with
/// values shaped like real ones.
pub const KAFKA: [(&str, &str); 6] = [
    ("EventBus", "Kafka"),
    (
        "KafkaClusterArn",
        "arn:aws:kafka:eu-west-1:123456789012:cluster/reservations/0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0-s1",
    ),
    (
        "KafkaBootstrapServers",
        "b-1.reservations.abc123.c2.kafka.eu-west-1.amazonaws.com:9098",
    ),
    ("KafkaTopicPartitions", "6"),
    ("KafkaSubnetIds", "subnet-0a1b2c3d4e5f60718,subnet-0a1b2c3d4e5f60719"),
    ("KafkaSecurityGroupIds", "sg-0a1b2c3d4e5f60718"),
];

/// An expression's value.
#[derive(Debug, Clone, PartialEq)]
pub enum Evaluated {
    Text(String),
    List(Vec<String>),
    Bool(bool),
}

pub struct Deploy<'a> {
    template: &'a Value,
    overrides: HashMap<&'a str, &'a str>,
    stack_name: String,
    region: String,
}

impl<'a> Deploy<'a> {
    pub fn new(template: &'a Value, overrides: &[(&'a str, &'a str)]) -> Self {
        for (name, _) in overrides {
            assert!(template["Parameters"].get(*name).is_some(), "no parameter {name}");
        }
        Deploy {
            template,
            overrides: overrides.iter().copied().collect(),
            stack_name: STACK_NAME.to_owned(),
            region: REGION.to_owned(),
        }
    }

    /// The same deployment under another stack name and Region (`AWS::StackName`, `AWS::Region`).
    pub fn deployed_as(self, stack_name: &str, region: &str) -> Self {
        Deploy {
            stack_name: stack_name.to_owned(),
            region: region.to_owned(),
            ..self
        }
    }

    /// A parameter as CloudFormation passes it on: a CommaDelimitedList as its list.
    fn parameter(&self, name: &str) -> Evaluated {
        let declared = &self.template["Parameters"][name];
        assert!(declared.is_mapping(), "an undeclared parameter {name}");
        let value = self
            .overrides
            .get(name)
            .map(|v| (*v).to_owned())
            .unwrap_or_else(|| match &declared["Default"] {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                _ => panic!("{name} has no default"),
            });
        if declared["Type"].as_str() == Some("CommaDelimitedList") {
            Evaluated::List(value.split(',').map(str::to_owned).collect())
        } else {
            Evaluated::Text(value)
        }
    }

    pub fn eval(&self, expression: &Value) -> Evaluated {
        let Value::Tagged(tagged) = expression else {
            return Evaluated::Text(expression.as_str().expect("a literal here is a string").to_owned());
        };
        let arguments = || tagged.value.as_sequence().expect("this function takes a list");
        let truth = |value: &Value| match self.eval(value) {
            Evaluated::Bool(b) => b,
            other => panic!("{other:?} is not a condition"),
        };
        match tagged.tag.to_string().trim_start_matches('!') {
            "Ref" => match tagged.value.as_str().expect("Ref names a parameter") {
                pseudo @ "AWS::Region" => Evaluated::Text(self.named(pseudo).expect("a pseudo parameter")),
                parameter => self.parameter(parameter),
            },
            "Condition" => Evaluated::Bool(self.condition(tagged.value.as_str().expect("a condition's name"))),
            "Equals" => Evaluated::Bool(self.eval(&arguments()[0]) == self.eval(&arguments()[1])),
            "Not" => Evaluated::Bool(!truth(&arguments()[0])),
            "And" => Evaluated::Bool(arguments().iter().all(truth)),
            "Or" => Evaluated::Bool(arguments().iter().any(truth)),
            // True when the string is one of the list's values.
            "Contains" => match (self.eval(&arguments()[0]), self.eval(&arguments()[1])) {
                (Evaluated::List(list), Evaluated::Text(text)) => Evaluated::Bool(list.contains(&text)),
                other => panic!("Contains takes a list and a string, got {other:?}"),
            },
            "Join" => match self.eval(&arguments()[1]) {
                Evaluated::List(list) => Evaluated::Text(list.join(arguments()[0].as_str().unwrap())),
                other => panic!("Join takes a list, got {other:?}"),
            },
            other => panic!("this test does not evaluate {other}; teach it"),
        }
    }

    pub fn condition(&self, name: &str) -> bool {
        let declared = self.template["Conditions"]
            .get(name)
            .unwrap_or_else(|| panic!("no condition {name}"));
        self.eval(declared) == Evaluated::Bool(true)
    }

    /// The messages of the assertions that fail, of every rule whose condition holds.
    pub fn refusals(&self) -> Vec<String> {
        let mut refusals = Vec::new();
        for (_, rule) in self.template["Rules"].as_mapping().expect("template.yaml has Rules") {
            let applies = rule
                .get("RuleCondition")
                .is_none_or(|c| self.eval(c) == Evaluated::Bool(true));
            for assertion in rule["Assertions"].as_sequence().into_iter().flatten() {
                if applies && self.eval(&assertion["Assert"]) != Evaluated::Bool(true) {
                    refusals.push(assertion["AssertDescription"].as_str().unwrap_or_default().to_owned());
                }
            }
        }
        refusals
    }

    /// The template as the stack these parameters make: Resources and Outputs whose condition
    /// is false are gone, and every value is as CloudFormation would pass it. Panics when the
    /// Rules refuse the parameters: no such stack exists.
    pub fn stack(&self) -> Value {
        let refused = self.refusals();
        assert!(refused.is_empty(), "the Rules refuse this deployment: {refused:?}");
        let mut stack = Mapping::new();
        for (key, section) in self.template.as_mapping().unwrap() {
            let value = match key.as_str() {
                Some("Resources" | "Outputs") => Value::Mapping(
                    section
                        .as_mapping()
                        .unwrap()
                        .iter()
                        .filter(|(_, entry)| entry["Condition"].as_str().is_none_or(|c| self.condition(c)))
                        .filter_map(|(id, entry)| Some((id.clone(), self.resolve(entry)?)))
                        .collect(),
                ),
                Some("Globals") => self.resolve(section).unwrap_or(Value::Null),
                _ => section.clone(),
            };
            stack.insert(key.clone(), value);
        }
        Value::Mapping(stack)
    }

    /// A value with its conditions and parameters resolved; None for `AWS::NoValue`.
    fn resolve(&self, value: &Value) -> Option<Value> {
        match value {
            Value::Tagged(tagged) => self.resolve_function(tagged),
            Value::Mapping(mapping) => Some(Value::Mapping(
                mapping
                    .iter()
                    .filter_map(|(k, v)| Some((k.clone(), self.resolve(v)?)))
                    .collect(),
            )),
            Value::Sequence(items) => Some(Value::Sequence(items.iter().filter_map(|v| self.resolve(v)).collect())),
            other => Some(other.clone()),
        }
    }

    fn resolve_function(&self, tagged: &TaggedValue) -> Option<Value> {
        match tagged.tag.to_string().trim_start_matches('!') {
            "If" => {
                let branches = tagged.value.as_sequence().expect("If takes a list");
                let chosen = if self.condition(branches[0].as_str().expect("If names a condition")) {
                    &branches[1]
                } else {
                    &branches[2]
                };
                self.resolve(chosen)
            }
            "Ref" => match tagged.value.as_str() {
                Some("AWS::NoValue") => None,
                Some(name) if self.template["Parameters"].get(name).is_some() => Some(match self.parameter(name) {
                    Evaluated::Text(text) => Value::String(text),
                    Evaluated::List(list) => Value::Sequence(list.into_iter().map(Value::String).collect()),
                    Evaluated::Bool(_) => unreachable!("a parameter is never a boolean"),
                }),
                Some(pseudo)
                    if pseudo.starts_with("AWS::")
                        && let Some(value) = self.named(pseudo) =>
                {
                    Some(Value::String(value))
                }
                _ => Some(Value::Tagged(Box::new(tagged.clone()))),
            },
            function => {
                let arguments = self.resolve(&tagged.value).unwrap_or(Value::Null);
                Some(
                    literal(function, &arguments, |name| self.named(name)).unwrap_or_else(|| {
                        Value::Tagged(Box::new(TaggedValue {
                            tag: tagged.tag.clone(),
                            value: arguments,
                        }))
                    }),
                )
            }
        }
    }

    /// What `${name}` stands for in a Sub, when it is a parameter or a pseudo parameter of this
    /// deployment (the stack name and Region it is deployed as).
    pub fn named(&self, name: &str) -> Option<String> {
        match name {
            "AWS::StackName" => Some(self.stack_name.clone()),
            "AWS::Partition" => Some("aws".to_owned()),
            "AWS::Region" => Some(self.region.clone()),
            "AWS::AccountId" => Some("123456789012".to_owned()),
            parameter if self.template["Parameters"].get(parameter).is_some() => match self.parameter(parameter) {
                Evaluated::Text(text) => Some(text),
                _ => None,
            },
            _ => None,
        }
    }
}

/// The stack name and Region `Deploy::stack` deploys as unless told otherwise.
pub const STACK_NAME: &str = "reservations";
pub const REGION: &str = "eu-west-1";

/// template.yaml as written, tags kept.
pub fn source() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../template.yaml");
    serde_yaml_ng::from_str(&std::fs::read_to_string(path).expect("template.yaml")).expect("template.yaml parses")
}

/// A CloudFormation value as JSON, with tags (`!Ref`, ...) kept as `{"!Ref": ...}`.
pub fn to_json(value: &Value) -> serde_json::Value {
    match value {
        Value::Tagged(tagged) => serde_json::json!({ tagged.tag.to_string(): to_json(&tagged.value) }),
        Value::Mapping(m) => m
            .iter()
            .map(|(k, v)| (k.as_str().unwrap_or_default().to_owned(), to_json(v)))
            .collect::<serde_json::Map<_, _>>()
            .into(),
        Value::Sequence(s) => s.iter().map(to_json).collect::<Vec<_>>().into(),
        other => serde_json::to_value(other).unwrap(),
    }
}

/// A `!Join` of literals and `!Sub`s (as [`to_json`] writes them) as the text CloudFormation
/// makes: each `${name}` or `${Resource.Attribute}` is what `named` answers, or `<Resource>`
/// where it answers nothing (what only CloudFormation knows).
pub fn joined_text(value: &serde_json::Value, named: &dyn Fn(&str) -> Option<String>) -> String {
    if let Some(text) = value.as_str() {
        return text.to_owned();
    }
    if let Some(template) = value.get("!Sub").and_then(|t| t.as_str()) {
        let mut text = String::new();
        let mut rest = template;
        while let Some(start) = rest.find("${") {
            text.push_str(&rest[..start]);
            let end = rest[start..].find('}').expect("a closed ${...}") + start;
            let name = &rest[start + 2..end];
            match named(name) {
                Some(value) => text.push_str(&value),
                None => text.push_str(&format!("<{}>", name.split('.').next().unwrap())),
            }
            rest = &rest[end + 1..];
        }
        text.push_str(rest);
        return text;
    }
    let join = value.get("!Join").expect("a Join, a Sub or a literal");
    let separator = join[0].as_str().unwrap();
    join[1]
        .as_array()
        .unwrap()
        .iter()
        .map(|part| joined_text(part, named))
        .collect::<Vec<_>>()
        .join(separator)
}

/// Join, Split and Sub of literals, as their literal result; None when something is left that
/// only CloudFormation knows (a resource's ARN, say).
fn literal(function: &str, arguments: &Value, named: impl Fn(&str) -> Option<String>) -> Option<Value> {
    match function {
        "Join" => {
            let separator = arguments[0].as_str()?;
            // Only plain strings: `as_str` would also read a tagged part (a Sub left for
            // CloudFormation) as its unresolved text.
            let parts: Option<Vec<&str>> = arguments[1]
                .as_sequence()?
                .iter()
                .map(|part| match part {
                    Value::String(text) => Some(text.as_str()),
                    _ => None,
                })
                .collect();
            Some(Value::String(parts?.join(separator)))
        }
        "Split" => {
            let (separator, text) = (arguments[0].as_str()?, arguments[1].as_str()?);
            Some(Value::Sequence(
                text.split(separator)
                    .map(|part| Value::String(part.to_owned()))
                    .collect(),
            ))
        }
        "Sub" => {
            // `!Sub text`, or `!Sub [text, {name: value}]` whose values are known.
            let (mut text, variables) = match arguments {
                Value::Sequence(parts) => (parts.first()?.as_str()?.to_owned(), parts.get(1)?.as_mapping()),
                other => (other.as_str()?.to_owned(), None),
            };
            let variable = |name: &str| match variables.and_then(|v| v.get(name)) {
                Some(Value::String(value)) => Some(value.clone()),
                Some(_) => None,
                None => named(name),
            };
            while let Some(start) = text.find("${") {
                let end = start + text[start..].find('}')?;
                let value = variable(&text[start + 2..end])?;
                text.replace_range(start..=end, &value);
            }
            Some(Value::String(text))
        }
        _ => None,
    }
}
