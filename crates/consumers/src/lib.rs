//! The product's consumers of the event stream, written on the consumer kit
//! (`reservation-events-consumer`), as a team outside the product writes its own, and [`ALL`],
//! the one list of them that the tools read.
//!
//! Each is a [`Consumer`]: it turns one event into an effect through a port that enforces the
//! kit's ordering rule ([`domain::decide`]) in one conditional write: the projector writes the
//! guest read model, the notifier sends a notification. The kit's [`ConsumerHandler`] runs either
//! over Lambda's Kinesis or MSK batches: in order, malformed records dead-lettered, and the
//! earliest record it could not apply reported back to Lambda.
//!
//! Adding a consumer: its module here (the consumer and its [`Registration`]), its entry in
//! [`ALL`], its function crate (`functions/<name>`, whose main calls [`run_lambda`]), its block
//! of `template.yaml`, and its table in `infra/resources.json`. The Lambda, `reservations-replay`
//! (replay, audit, re-drive, move-home), the local stack, the template checks and the
//! benchmarks (`consumer-bench`, `scripts/bench.sh consumers` and `cost`) take it from the list.

pub mod config;
pub mod notifier;
pub mod projector;

pub use config::{ConsumerConfig, ConsumerConfigError};
pub use notifier::Notifier;
pub use projector::Projector;
pub use reservation_events_consumer::{
    BatchStats, BoxConsumer, Consumer, ConsumerError, ConsumerHandler, KafkaEventResponse,
};

use reservation_events_consumer::{ReservationEvent, lambda};
use settings::{ResourceName, SettingError};
use std::collections::HashMap;

/// Every consumer of the product.
pub const ALL: &[&Registration] = &[&projector::REGISTRATION, &notifier::REGISTRATION];

/// The registered consumer called `name`.
pub fn named(name: &str) -> Option<&'static Registration> {
    ALL.iter().copied().find(|registration| registration.name == name)
}

/// A consumer as the tools and its Lambda know it.
pub struct Registration {
    /// Its name: `reservations-replay <name>`, its dead letters' `function`, its metrics'
    /// `Function` dimension, its Lambda `reservations-<name>` and its resources in the template
    /// (`<Name>Function`, `<Name>DeadLetterQueue`, `<Name>EventSourceMapping`).
    pub name: &'static str,
    /// What replaying into it does, one line (`reservations-replay --help`).
    pub about: &'static str,
    /// The table it keeps its state and its progress in (`--table` of a replay overrides it).
    pub table: ResourceName,
    /// The consumer on AWS (or the local stack), from the variables naming its resources.
    pub build: fn(&Wiring<'_>) -> Result<BoxConsumer, SettingError>,
    /// The consumer on in-memory stores with the same version rule, if it has them: what the
    /// benchmarks measure as the handler's own work, without the SDK (`None`: they measure it
    /// on the local stack only).
    #[cfg(feature = "test-util")]
    pub in_memory: Option<fn() -> BoxConsumer>,
}

impl Registration {
    pub fn build(&self, wiring: &Wiring<'_>) -> Result<BoxConsumer, SettingError> {
        (self.build)(wiring)
    }

    /// Its Lambda's binary (the template's `BuildProperties.Binary`).
    pub fn binary(&self) -> String {
        format!("reservations-{}", self.name)
    }

    /// The logical id of one of its resources in the template: `<Name><kind>`.
    pub fn logical_id(&self, kind: &str) -> String {
        let mut chars = self.name.chars();
        let first = chars.next().map(|c| c.to_ascii_uppercase()).into_iter();
        first.chain(chars).chain(kind.chars()).collect()
    }
}

/// What a consumer is built from.
pub struct Wiring<'a> {
    pub sdk: &'a aws_types::SdkConfig,
    /// Every consumer keeps its progress in DynamoDB (its registration's `table`): the client for
    /// it, made by the caller so that it can add to it (the benchmarks meter its capacity).
    pub dynamodb: aws_sdk_dynamodb::Client,
    /// The variables naming its resources: a function's environment, or a tool's (over a
    /// stack's outputs).
    pub vars: &'a HashMap<String, String>,
    pub publishes: Publishes,
    /// Where the consumer's own metrics go (the batch metrics are the handler's).
    pub metrics: telemetry::Emitter,
}

impl<'a> Wiring<'a> {
    /// The wiring of a deployed consumer: its clients from `sdk`.
    pub fn new(
        sdk: &'a aws_types::SdkConfig,
        vars: &'a HashMap<String, String>,
        publishes: Publishes,
        metrics: telemetry::Emitter,
    ) -> Self {
        Self {
            sdk,
            dynamodb: aws_sdk_dynamodb::Client::new(sdk),
            vars,
            publishes,
            metrics,
        }
    }
}

/// Whether a consumer built by a tool may act beyond its own table (the notifier publishes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Publishes {
    Yes,
    /// Reads its progress only (audits, dry runs): what it would publish to need not be set.
    No,
}

/// The Lambda of `registration`: its configuration and clients, once, then the consumer kit's
/// loop on the bus `EVENT_BUS` names.
pub async fn run_lambda(registration: &Registration) -> Result<(), lambda::Error> {
    let vars: HashMap<String, String> = std::env::vars().collect();
    let config = ConsumerConfig::from_vars(&vars, registration.table)?;
    let sdk = settings::sdk_config().await;
    let wiring = Wiring::new(&sdk, &vars, Publishes::Yes, telemetry::Emitter::Stdout);
    lambda::run(registration.build(&wiring)?, &config.kit, &sdk).await
}

/// The domain's view of an event the kit decoded. One the product cannot act on (a type or
/// status added to the contract after this version) is refused for good: dead-lettered.
fn domain_event(event: &ReservationEvent) -> Result<domain::ReservationEvent, ConsumerError> {
    domain::ReservationEvent::try_from(event).map_err(ConsumerError::rejected)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sdk() -> aws_types::SdkConfig {
        aws_types::SdkConfig::builder()
            .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
            .region(aws_types::region::Region::new("eu-west-1"))
            .build()
    }

    #[test]
    fn each_consumer_is_listed_once_by_a_name_its_resources_follow() {
        let names: std::collections::BTreeSet<&str> = ALL.iter().map(|r| r.name).collect();
        assert_eq!(names.len(), ALL.len(), "a name is listed once");
        assert!(names.contains("projector") && names.contains("notifier"));
        assert!(named("notifier").is_some() && named("no-such-consumer").is_none());
        let projector = named("projector").unwrap();
        assert_eq!(projector.binary(), "reservations-projector");
        assert_eq!(projector.logical_id("DeadLetterQueue"), "ProjectorDeadLetterQueue");
    }

    #[test]
    fn the_notifier_needs_its_topic_to_publish_and_not_to_read_its_progress() {
        let sdk = sdk();
        let vars = HashMap::new();
        let wiring = |publishes| Wiring::new(&sdk, &vars, publishes, telemetry::Emitter::Off);
        let err = notifier::REGISTRATION.build(&wiring(Publishes::Yes)).err().unwrap();
        assert_eq!(
            err.to_string(),
            "NOTIFICATIONS_TOPIC_ARN is not set: it must be the ARN of the notifications SNS FIFO topic (stack output NotificationsTopicArn)"
        );
        let reader = notifier::REGISTRATION.build(&wiring(Publishes::No)).unwrap();
        assert_eq!(reader.name(), "notifier");
        assert_eq!(
            projector::REGISTRATION.build(&wiring(Publishes::Yes)).unwrap().name(),
            "projector"
        );
    }
}
