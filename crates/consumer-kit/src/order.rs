//! The rule that applies each reservation's events once and in order: version `v` only right
//! after `v - 1`, anything older is a duplicate, anything later waits for what is missing.

use serde::{Deserialize, Deserializer, Serialize};
use std::fmt;

/// A reservation's version: 1 when created, +1 per change. Events carry the version after their
/// change, which is what lets a consumer apply a reservation's events in order and spot gaps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Version(u64);

impl Version {
    pub const FIRST: Version = Version(1);

    /// `None` for 0: versions start at 1.
    pub fn new(value: u64) -> Option<Self> {
        (value >= 1).then_some(Self(value))
    }

    pub fn get(self) -> u64 {
        self.0
    }

    pub fn next(self) -> Self {
        Self(self.0 + 1)
    }

    /// The version before this one; `None` for the first.
    pub fn previous(self) -> Option<Self> {
        Self::new(self.0 - 1)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<'de> Deserialize<'de> for Version {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = u64::deserialize(deserializer)?;
        Self::new(value).ok_or_else(|| serde::de::Error::custom("a version is 1 or more, got 0"))
    }
}

/// What became of one event at a consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyOutcome {
    /// Its effect happened now, once.
    Applied,
    /// This version (or a later one) was applied before: acknowledged, no effect.
    Duplicate,
    /// An earlier version is missing: not applied. The handler dead-letters the event with the
    /// version it waits for and holds the reservation's later events back in the batch.
    Gap { expected: Version },
}

/// The ordering rule. `applied` is the reservation's last applied version at this consumer
/// (`None`: nothing yet), `incoming` the event's.
///
/// A consumer calls it with what it has stored and applies the event only on
/// [`ApplyOutcome::Applied`], in the same conditional write that stores `incoming` as applied,
/// so that two deliveries racing each other cannot both apply it.
pub fn decide(applied: Option<Version>, incoming: Version) -> ApplyOutcome {
    let expected = applied.map_or(Version::FIRST, Version::next);
    if incoming == expected {
        ApplyOutcome::Applied
    } else if incoming < expected {
        ApplyOutcome::Duplicate
    } else {
        ApplyOutcome::Gap { expected }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(n: u64) -> Version {
        Version::new(n).unwrap()
    }

    #[test]
    fn the_next_version_applies_older_ones_are_duplicates_and_later_ones_are_gaps() {
        assert_eq!(decide(None, v(1)), ApplyOutcome::Applied);
        assert_eq!(decide(None, v(2)), ApplyOutcome::Gap { expected: v(1) });
        assert_eq!(decide(Some(v(1)), v(2)), ApplyOutcome::Applied);
        assert_eq!(decide(Some(v(2)), v(1)), ApplyOutcome::Duplicate);
        assert_eq!(decide(Some(v(2)), v(2)), ApplyOutcome::Duplicate);
        assert_eq!(decide(Some(v(2)), v(4)), ApplyOutcome::Gap { expected: v(3) });
    }

    #[test]
    fn version_zero_does_not_exist_even_in_json() {
        assert!(Version::new(0).is_none());
        assert_eq!(v(3).next().get(), 4);
        assert_eq!(v(3).previous(), Some(v(2)));
        assert_eq!(Version::FIRST.previous(), None);
        assert!(serde_json::from_str::<Version>("0").is_err());
        assert_eq!(serde_json::from_str::<Version>("2").unwrap(), v(2));
    }
}
