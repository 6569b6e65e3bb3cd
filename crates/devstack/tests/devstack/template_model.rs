//! template.yaml as CloudFormation reads it for one set of parameters: its Rules, its Conditions,
//! and the stack they leave (resources whose condition is false dropped, each `Fn::If` replaced
//! by its branch, `AWS::NoValue` removed, a `Ref` to a parameter replaced by its value, and a
//! Join, Split or Sub of known values replaced by its result). The
//! functions are the ones AWS documents for rules and conditions (Fn::Equals, Fn::Not, Fn::And,
//! Fn::Or, Fn::Contains, Fn::Join, Condition, Ref); anything else stays as written.

use serde_yaml_ng::value::TaggedValue;
use serde_yaml_ng::{Mapping, Value};
use std::collections::HashMap;
use std::path::Path;

pub fn source() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../template.yaml");
    serde_yaml_ng::from_str(&std::fs::read_to_string(path).expect("template.yaml")).expect("template.yaml parses")
}

/// Parameters a Kafka deployment needs (the Rule KafkaNeedsTheClusterAndItsNetwork), with
/// values shaped like real ones.
pub const KAFKA: [(&str, &str); 5] = [
    ("EventBus", "Kafka"),
    (
        "KafkaClusterArn",
        "arn:aws:kafka:eu-west-1:123456789012:cluster/reservations/0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0-s1",
    ),
    (
        "KafkaBootstrapServers",
        "b-1.reservations.abc123.c2.kafka.eu-west-1.amazonaws.com:9098",
    ),
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
}

impl<'a> Deploy<'a> {
    pub fn new(template: &'a Value, overrides: &[(&'a str, &'a str)]) -> Self {
        for (name, _) in overrides {
            assert!(template["Parameters"].get(*name).is_some(), "no parameter {name}");
        }
        Deploy {
            template,
            overrides: overrides.iter().copied().collect(),
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

    /// What `${name}` stands for in a Sub, when it is a parameter or a pseudo parameter.
    fn named(&self, name: &str) -> Option<String> {
        match name {
            "AWS::StackName" => Some(STACK_NAME.to_owned()),
            "AWS::Partition" => Some("aws".to_owned()),
            "AWS::Region" => Some("eu-west-1".to_owned()),
            "AWS::AccountId" => Some("123456789012".to_owned()),
            parameter if self.template["Parameters"].get(parameter).is_some() => match self.parameter(parameter) {
                Evaluated::Text(text) => Some(text),
                _ => None,
            },
            _ => None,
        }
    }
}

/// The stack name `Deploy::stack` deploys as.
pub const STACK_NAME: &str = "reservations";

/// Join, Split and Sub of literals, as their literal result; None when something is left that
/// only CloudFormation knows (a resource's ARN, say).
fn literal(function: &str, arguments: &Value, named: impl Fn(&str) -> Option<String>) -> Option<Value> {
    match function {
        "Join" => {
            let separator = arguments[0].as_str()?;
            let parts: Option<Vec<&str>> = arguments[1].as_sequence()?.iter().map(Value::as_str).collect();
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
            let mut text = arguments.as_str()?.to_owned();
            while let Some(start) = text.find("${") {
                let end = start + text[start..].find('}')?;
                let value = named(&text[start + 2..end])?;
                text.replace_range(start..=end, &value);
            }
            Some(Value::String(text))
        }
        _ => None,
    }
}
