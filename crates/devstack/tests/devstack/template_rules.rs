//! template.yaml's `Rules` refuse, before anything is created, the parameter combinations that
//! cannot work, each with a message saying what to set. LocalStack creates a change set whatever
//! the Rules say, so they are evaluated here, with the semantics AWS documents for the rule
//! functions (Fn::Equals, Fn::Not, Fn::And, Fn::Or, Fn::Contains, Ref).

use serde_yaml_ng::Value;
use std::collections::HashMap;
use std::path::Path;

/// A rule expression's value.
#[derive(Debug, Clone, PartialEq)]
enum Evaluated {
    Text(String),
    List(Vec<String>),
    Bool(bool),
}

struct Deploy<'a> {
    template: &'a Value,
    overrides: HashMap<&'a str, &'a str>,
}

impl Deploy<'_> {
    /// A parameter as CloudFormation passes it to a rule: a CommaDelimitedList as its list.
    fn parameter(&self, name: &str) -> Evaluated {
        let declared = &self.template["Parameters"][name];
        assert!(declared.is_mapping(), "the rules name an undeclared parameter {name}");
        let value = self.overrides.get(name).copied().unwrap_or_else(|| {
            declared["Default"]
                .as_str()
                .unwrap_or_else(|| panic!("{name} has no default"))
        });
        if declared["Type"].as_str() == Some("CommaDelimitedList") {
            Evaluated::List(value.split(',').map(str::to_owned).collect())
        } else {
            Evaluated::Text(value.to_owned())
        }
    }

    fn eval(&self, expression: &Value) -> Evaluated {
        let Value::Tagged(tagged) = expression else {
            return Evaluated::Text(expression.as_str().expect("a rule's literal is a string").to_owned());
        };
        let arguments = || tagged.value.as_sequence().expect("a rule function takes a list");
        let truth = |value: &Value| match self.eval(value) {
            Evaluated::Bool(b) => b,
            other => panic!("{other:?} is not a condition"),
        };
        match tagged.tag.to_string().trim_start_matches('!') {
            "Ref" => self.parameter(tagged.value.as_str().expect("Ref names a parameter")),
            "Equals" => Evaluated::Bool(self.eval(&arguments()[0]) == self.eval(&arguments()[1])),
            "Not" => Evaluated::Bool(!truth(&arguments()[0])),
            "And" => Evaluated::Bool(arguments().iter().all(truth)),
            "Or" => Evaluated::Bool(arguments().iter().any(truth)),
            // True when the string is one of the list's values.
            "Contains" => match (self.eval(&arguments()[0]), self.eval(&arguments()[1])) {
                (Evaluated::List(list), Evaluated::Text(text)) => Evaluated::Bool(list.contains(&text)),
                other => panic!("Contains takes a list and a string, got {other:?}"),
            },
            other => panic!("this test does not evaluate the rule function {other}; teach it"),
        }
    }

    /// The messages of the assertions that fail, of every rule whose condition holds.
    fn refusals(&self) -> Vec<String> {
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
}

fn refusals(template: &Value, overrides: &[(&str, &str)]) -> Vec<String> {
    Deploy {
        template,
        overrides: overrides.iter().copied().collect(),
    }
    .refusals()
}

fn template() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../template.yaml");
    serde_yaml_ng::from_str(&std::fs::read_to_string(path).expect("template.yaml")).expect("template.yaml parses")
}

#[test]
fn jwt_without_an_issuer_or_an_audience_is_refused_with_what_to_set() {
    let template = template();
    assert_eq!(
        refusals(&template, &[("AuthMode", "JWT")]),
        [
            "AuthMode JWT needs JwtIssuer, the token issuer's URL.",
            "AuthMode JWT needs JwtAudience, the audiences (client ids) to accept."
        ]
    );
    let issuer = ("JwtIssuer", "https://cognito-idp.eu-west-1.amazonaws.com/pool");
    assert_eq!(
        refusals(&template, &[("AuthMode", "JWT"), issuer]),
        ["AuthMode JWT needs JwtAudience, the audiences (client ids) to accept."]
    );
    let audiences = ("JwtAudience", "client-a,client-b");
    assert!(refusals(&template, &[("AuthMode", "JWT"), issuer, audiences]).is_empty());
}

#[test]
fn a_function_url_with_jwt_is_refused_and_every_other_front_door_deploys() {
    let template = template();
    let jwt = [
        ("AuthMode", "JWT"),
        ("JwtIssuer", "https://issuer.example"),
        ("JwtAudience", "client"),
    ];
    let with_function_url: Vec<_> = jwt.iter().copied().chain([("ApiEndpoint", "FunctionUrl")]).collect();
    assert_eq!(
        refusals(&template, &with_function_url),
        ["A Lambda function URL cannot validate JWTs; use ApiEndpoint HttpApi with AuthMode JWT."]
    );
    // The defaults (HTTP API, IAM), and what scripts/deploy-localstack.sh deploys.
    assert!(refusals(&template, &[]).is_empty());
    assert!(refusals(&template, &[("ApiEndpoint", "FunctionUrl"), ("AuthMode", "NONE")]).is_empty());
    assert!(refusals(&template, &[("ApiEndpoint", "FunctionUrl"), ("AuthMode", "IAM")]).is_empty());
}
