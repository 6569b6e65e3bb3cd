//! Settings from the environment, defined once for every function and tool.
//!
//! - [`names`]: each resource the product uses, the variable that names it and its default
//!   (`OUTBOX_TABLE`, default `reservation-outbox`).
//! - [`Vars`]: reads a variable as text or as a bounded whole number, with a default when it is
//!   unset and an error that names the variable when it is set to something unusable.
//!
//! Every `*Config::from_vars` in the workspace takes the variables as a map, so tests pass their
//! own instead of changing the process environment.

use std::collections::HashMap;

/// The AWS SDK's configuration as every binary loads it: endpoints, region and credentials from
/// the SDK's own chain (`AWS_ENDPOINT_URL`, `AWS_PROFILE`, ...), and the SDK behaviour pinned to
/// the version the product is tested with, so an SDK upgrade cannot change retries, timeouts or
/// defaults unnoticed.
#[cfg(feature = "aws")]
pub async fn sdk_config() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::v2026_01_12())
        .load()
        .await
}

/// A resource the product uses, named by an environment variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceName {
    pub var: &'static str,
    pub default: &'static str,
}

/// The product's resources and their default names (the names the local stack and the docs use).
pub mod names {
    use super::ResourceName;

    /// Slots, reservations and idempotency records (one table).
    pub const RESERVATIONS_TABLE: ResourceName = ResourceName {
        var: "RESERVATIONS_TABLE",
        default: "reservations",
    };
    /// One item per event; its stream feeds the relay.
    pub const OUTBOX_TABLE: ResourceName = ResourceName {
        var: "OUTBOX_TABLE",
        default: "reservation-outbox",
    };
    /// The Kinesis stream the events are published to.
    pub const EVENTS_STREAM: ResourceName = ResourceName {
        var: "EVENTS_STREAM",
        default: "reservation-events",
    };
    /// The projector's guest read model.
    pub const READ_MODEL_TABLE: ResourceName = ResourceName {
        var: "READ_MODEL_TABLE",
        default: "guest-reservations",
    };
    /// The notifier's sent notifications and per-reservation progress.
    pub const NOTIFICATIONS_TABLE: ResourceName = ResourceName {
        var: "NOTIFICATIONS_TABLE",
        default: "reservation-notifications",
    };

    /// The SNS FIFO topic notifications are published to (the local stack creates it by this
    /// name; deployed functions get its ARN in `NOTIFICATIONS_TOPIC_ARN`).
    pub const NOTIFICATIONS_TOPIC: ResourceName = ResourceName {
        var: "NOTIFICATIONS_TOPIC",
        default: "reservation-notifications.fifo",
    };
    /// The example subscriber: an SQS FIFO queue subscribed to the notifications topic.
    pub const NOTIFICATIONS_QUEUE: ResourceName = ResourceName {
        var: "NOTIFICATIONS_QUEUE",
        default: "reservation-notifications-subscriber.fifo",
    };

    pub const ALL: [ResourceName; 7] = [
        RESERVATIONS_TABLE,
        OUTBOX_TABLE,
        EVENTS_STREAM,
        READ_MODEL_TABLE,
        NOTIFICATIONS_TABLE,
        NOTIFICATIONS_TOPIC,
        NOTIFICATIONS_QUEUE,
    ];

    /// The notifications topic's ARN, for the notifier.
    pub const NOTIFICATIONS_TOPIC_ARN: &str = "NOTIFICATIONS_TOPIC_ARN";

    /// The resource named by `var`, if it is one of the product's.
    pub fn by_var(var: &str) -> Option<ResourceName> {
        ALL.into_iter().find(|name| name.var == var)
    }
}

/// Retention settings shared by the functions and the tools that read the same tables.
pub mod retention {
    use super::WholeNumber;

    /// `OUTBOX_RETENTION_DAYS`: the outbox items' TTL.
    pub const OUTBOX_DAYS: WholeNumber = WholeNumber::positive("OUTBOX_RETENTION_DAYS", 7);
    /// `IDEMPOTENCY_RETENTION_HOURS`: how long an Idempotency-Key is remembered.
    pub const IDEMPOTENCY_HOURS: WholeNumber = WholeNumber::positive("IDEMPOTENCY_RETENTION_HOURS", 24);
    /// `NOTIFICATION_RETENTION_DAYS`: the sent notifications' TTL.
    pub const NOTIFICATION_DAYS: WholeNumber = WholeNumber {
        var: "NOTIFICATION_RETENTION_DAYS",
        default: 30,
        min: 1,
        max: Some(3650),
        unit: Some("days"),
    };
}

/// A whole-number setting: its variable, default and bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WholeNumber {
    pub var: &'static str,
    pub default: u64,
    pub min: u64,
    /// `None`: no upper bound.
    pub max: Option<u64>,
    /// What the number counts, for the error message ("days").
    pub unit: Option<&'static str>,
}

impl WholeNumber {
    /// At least 1, no upper bound.
    pub const fn positive(var: &'static str, default: u64) -> Self {
        Self {
            var,
            default,
            min: 1,
            max: None,
            unit: None,
        }
    }

    /// From `min` to `max`, both included.
    pub const fn between(var: &'static str, default: u64, min: u64, max: u64) -> Self {
        Self {
            var,
            default,
            min,
            max: Some(max),
            unit: None,
        }
    }
}

/// `EVENT_BUS`: which bus the events travel on, the template's `EventBus`: the relay and the
/// poller publish to it, the consumers are invoked with its events. The consumer kit's own
/// setting (`Bus::from_vars`), so the product and the kit read it alike: `Kinesis` (the default,
/// the stream `EVENTS_STREAM`) or `Kafka` (`KAFKA_BOOTSTRAP_SERVERS`, `KAFKA_TOPIC`, `KAFKA_AUTH`).
pub use reservation_events_consumer::Bus as EventBus;

/// The Region of a process started without `AWS_REGION`: the one the local scripts export and
/// LocalStack serves by default, so that the product, its scripts and its docs name one Region.
pub const DEFAULT_REGION: &str = "us-east-1";

/// Where this process runs and which Region is the primary one, for a deployment whose tables
/// are DynamoDB global tables (docs/multi-region.md). A single-Region deployment is the case
/// where both are the same, which is what an unset `PRIMARY_REGION` means.
///
/// - `here`: `AWS_REGION`, which Lambda always sets; unset, [`DEFAULT_REGION`]. The SDK may take
///   its Region from a profile instead, which this does not read: a tool run with a profile's
///   Region needs `AWS_REGION` set to the same.
/// - `primary`: `PRIMARY_REGION`, else `here`. The primary Region publishes outbox items written
///   before items recorded their Region, and is the home of slots created before slots had one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Regions {
    pub here: String,
    pub primary: String,
}

impl Regions {
    /// One Region, `region`, that is its own primary.
    pub fn single(region: &str) -> Self {
        Self {
            here: region.to_owned(),
            primary: region.to_owned(),
        }
    }

    pub fn from_vars(vars: &HashMap<String, String>) -> Result<Self, SettingError> {
        let vars = Vars(vars);
        let here = vars.text("AWS_REGION", DEFAULT_REGION)?;
        let primary = vars.text("PRIMARY_REGION", &here)?;
        Ok(Self { here, primary })
    }

    pub fn is_primary(&self) -> bool {
        self.here == self.primary
    }

    /// `REGIONS`: every Region of the deployment (comma-separated, blanks skipped), which a new
    /// slot may name as its home; this Region and the primary always count.
    pub fn deployment_from_vars(&self, vars: &HashMap<String, String>) -> Vec<String> {
        let mut regions = vec![self.primary.clone()];
        let listed = Vars(vars).get("REGIONS").unwrap_or_default();
        for region in listed.split(',').map(str::trim).chain([self.here.as_str()]) {
            if !region.is_empty() && !regions.iter().any(|r| r == region) {
                regions.push(region.to_owned());
            }
        }
        regions
    }

    /// Whether an outbox event born in `born_in` is this Region's to publish: born here, or,
    /// written before outbox items recorded their Region, this is the primary.
    pub fn publishes(&self, born_in: Option<&str>) -> bool {
        match born_in {
            Some(region) => region == self.here,
            None => self.is_primary(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingError {
    /// A setting the consumer kit reads (`EVENT_BUS`, the dead letters').
    #[error(transparent)]
    Kit(#[from] reservation_events_consumer::ConfigError),
    #[error("{0} must not be empty")]
    Empty(&'static str),
    #[error("{var} is not set: it must be {what}")]
    Missing { var: &'static str, what: &'static str },
    #[error("{var} must be {allowed}, got {value:?}")]
    Choice {
        var: &'static str,
        allowed: &'static str,
        value: String,
    },
    #[error("{var} must be a positive whole number, got {value:?}")]
    NotPositive { var: &'static str, value: String },
    #[error("{var} must be a whole number{} from {min} to {max}, got {value:?}", unit.map(|u| format!(" of {u}")).unwrap_or_default())]
    OutOfRange {
        var: &'static str,
        min: u64,
        max: u64,
        unit: Option<&'static str>,
        value: String,
    },
}

/// A variables map from pairs: what tests (and tools that set their own) pass to `from_vars`.
pub fn vars_of(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// The variables a configuration is read from (the process environment, or a test's map).
#[derive(Debug, Clone, Copy)]
pub struct Vars<'a>(pub &'a HashMap<String, String>);

impl<'a> Vars<'a> {
    /// The variable's value, trimmed; `None` when it is unset.
    pub fn get(&self, var: &str) -> Option<&'a str> {
        self.0.get(var).map(|v| v.trim())
    }

    /// Text with a default when unset; set but blank is an error, not the default.
    pub fn text(&self, var: &'static str, default: &str) -> Result<String, SettingError> {
        match self.get(var) {
            None => Ok(default.to_owned()),
            Some("") => Err(SettingError::Empty(var)),
            Some(value) => Ok(value.to_owned()),
        }
    }

    /// Text that has no default; `what` says what it must be, for the error.
    pub fn required(&self, var: &'static str, what: &'static str) -> Result<String, SettingError> {
        match self.get(var) {
            None => Err(SettingError::Missing { var, what }),
            Some("") => Err(SettingError::Empty(var)),
            Some(value) => Ok(value.to_owned()),
        }
    }

    /// A resource's physical name: its variable, else its default.
    pub fn name(&self, resource: ResourceName) -> Result<String, SettingError> {
        self.text(resource.var, resource.default)
    }

    /// A resource's physical name, falling back to the default also when the variable is blank
    /// (for tools, which take their names from whatever environment they are run in).
    pub fn name_or_default(&self, resource: ResourceName) -> String {
        self.name(resource).unwrap_or_else(|_| resource.default.to_owned())
    }

    /// A whole number within its bounds, or its default when unset.
    pub fn whole_number(&self, setting: &WholeNumber) -> Result<u64, SettingError> {
        let Some(value) = self.get(setting.var) else {
            return Ok(setting.default);
        };
        let within = |n: &u64| *n >= setting.min && setting.max.is_none_or(|max| *n <= max);
        match value.parse::<u64>().ok().filter(within) {
            Some(n) => Ok(n),
            None => Err(match setting.max {
                None => SettingError::NotPositive {
                    var: setting.var,
                    value: self.0[setting.var].clone(),
                },
                Some(max) => SettingError::OutOfRange {
                    var: setting.var,
                    min: setting.min,
                    max,
                    unit: setting.unit,
                    value: self.0[setting.var].clone(),
                },
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::vars_of as vars;
    use super::*;

    #[test]
    fn names_default_when_unset_and_refuse_blank() {
        let empty = HashMap::new();
        assert_eq!(Vars(&empty).name(names::OUTBOX_TABLE).unwrap(), "reservation-outbox");
        let set = vars(&[("OUTBOX_TABLE", " ob ")]);
        assert_eq!(Vars(&set).name(names::OUTBOX_TABLE).unwrap(), "ob");
        let blank = vars(&[("OUTBOX_TABLE", " ")]);
        assert_eq!(
            Vars(&blank).name(names::OUTBOX_TABLE).unwrap_err().to_string(),
            "OUTBOX_TABLE must not be empty"
        );
        assert_eq!(Vars(&blank).name_or_default(names::OUTBOX_TABLE), "reservation-outbox");
        assert_eq!(names::by_var("EVENTS_STREAM"), Some(names::EVENTS_STREAM));
        assert_eq!(names::by_var("PATH"), None);
    }

    #[test]
    fn the_primary_region_is_this_one_unless_named() {
        let single = Regions::from_vars(&vars(&[("AWS_REGION", "eu-west-1")])).unwrap();
        assert_eq!(single, Regions::single("eu-west-1"));
        assert!(single.is_primary());
        let secondary =
            Regions::from_vars(&vars(&[("AWS_REGION", "eu-west-1"), ("PRIMARY_REGION", "us-east-1")])).unwrap();
        assert!(!secondary.is_primary());
        assert_eq!(secondary.primary, "us-east-1");
        assert_eq!(
            Regions::from_vars(&HashMap::new()).unwrap(),
            Regions::single("us-east-1")
        );
        // Each event is published by exactly one of the Regions.
        for born_in in [Some("eu-west-1"), Some("us-east-1"), None] {
            let publishers = [Regions::single("us-east-1"), secondary.clone()].map(|r| r.publishes(born_in));
            assert_eq!(publishers.iter().filter(|p| **p).count(), 1, "{born_in:?}");
        }
        assert_eq!(
            Regions::from_vars(&vars(&[("PRIMARY_REGION", "")])).unwrap_err(),
            SettingError::Empty("PRIMARY_REGION")
        );
    }

    #[test]
    fn whole_numbers_keep_their_bounds_and_name_the_variable() {
        let set = vars(&[("A", "0"), ("B", "61"), ("C", "forever"), ("D", "12")]);
        let set = Vars(&set);
        assert_eq!(
            set.whole_number(&WholeNumber::positive("A", 7))
                .unwrap_err()
                .to_string(),
            "A must be a positive whole number, got \"0\""
        );
        assert_eq!(
            set.whole_number(&WholeNumber::between("B", 1, 10, 60))
                .unwrap_err()
                .to_string(),
            "B must be a whole number from 10 to 60, got \"61\""
        );
        let days = WholeNumber {
            unit: Some("days"),
            ..WholeNumber::between("C", 30, 1, 3650)
        };
        assert_eq!(
            set.whole_number(&days).unwrap_err().to_string(),
            "C must be a whole number of days from 1 to 3650, got \"forever\""
        );
        assert_eq!(set.whole_number(&WholeNumber::between("D", 1, 10, 60)), Ok(12));
        assert_eq!(set.whole_number(&WholeNumber::positive("unset", 7)), Ok(7));
    }
}
