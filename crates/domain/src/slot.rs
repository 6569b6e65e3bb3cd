//! Slots and the quantities that move between them and reservations.

use crate::{ids::SlotId, validation::ValidationError};
use serde::{Deserialize, Serialize};

/// How many seats a slot offers. Zero is allowed: a slot can be closed without deleting it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "u32")]
pub struct Capacity(u32);

impl Capacity {
    pub const MAX: u32 = 1_000_000;

    pub fn new(value: i64) -> Result<Self, ValidationError> {
        if !(0..=i64::from(Self::MAX)).contains(&value) {
            return Err(ValidationError::new(
                "capacity",
                format!("must be between 0 and {}", Self::MAX),
            ));
        }
        Ok(Self(value as u32))
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

impl TryFrom<i64> for Capacity {
    type Error = ValidationError;
    fn try_from(value: i64) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<Capacity> for u32 {
    fn from(value: Capacity) -> Self {
        value.0
    }
}

/// Seats held by one reservation: at least one, at most [`Seats::MAX`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "u32")]
pub struct Seats(u32);

impl Seats {
    pub const MAX: u32 = 1_000;

    pub fn new(value: i64) -> Result<Self, ValidationError> {
        if !(1..=i64::from(Self::MAX)).contains(&value) {
            return Err(ValidationError::new(
                "seats",
                format!("must be between 1 and {}", Self::MAX),
            ));
        }
        Ok(Self(value as u32))
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

impl TryFrom<i64> for Seats {
    type Error = ValidationError;
    fn try_from(value: i64) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<Seats> for u32 {
    fn from(value: Seats) -> Self {
        value.0
    }
}

/// A slot's inventory. `reserved` never exceeds `capacity`: the store enforces it with a
/// condition on every change, this type only describes the state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slot {
    pub slot_id: SlotId,
    pub capacity: Capacity,
    pub reserved: u32,
}

impl Slot {
    pub fn new(slot_id: SlotId, capacity: Capacity) -> Self {
        Self {
            slot_id,
            capacity,
            reserved: 0,
        }
    }

    pub fn available(&self) -> u32 {
        self.capacity.get().saturating_sub(self.reserved)
    }

    pub fn can_hold(&self, seats: Seats) -> bool {
        seats.get() <= self.available()
    }

    /// Whether the capacity may change to `capacity` without un-booking anybody.
    pub fn can_resize_to(&self, capacity: Capacity) -> bool {
        self.reserved <= capacity.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(capacity: i64, reserved: u32) -> Slot {
        Slot {
            slot_id: SlotId::parse("s1").unwrap(),
            capacity: Capacity::new(capacity).unwrap(),
            reserved,
        }
    }

    #[test]
    fn seats_must_be_positive_and_bounded() {
        assert_eq!(Seats::new(0).unwrap_err().field, "seats");
        assert!(Seats::new(-3).is_err());
        assert!(Seats::new(1).is_ok());
        assert!(Seats::new(1_000).is_ok());
        assert!(Seats::new(1_001).is_err());
    }

    #[test]
    fn capacity_may_be_zero_but_not_negative() {
        assert!(Capacity::new(0).is_ok());
        assert_eq!(Capacity::new(-1).unwrap_err().field, "capacity");
        assert!(Capacity::new(i64::from(Capacity::MAX) + 1).is_err());
    }

    #[test]
    fn available_is_capacity_minus_reserved() {
        let s = slot(10, 4);
        assert_eq!(s.available(), 6);
        assert!(s.can_hold(Seats::new(6).unwrap()));
        assert!(!s.can_hold(Seats::new(7).unwrap()));
    }

    #[test]
    fn capacity_cannot_shrink_below_what_is_reserved() {
        let s = slot(10, 4);
        assert!(s.can_resize_to(Capacity::new(4).unwrap()));
        assert!(!s.can_resize_to(Capacity::new(3).unwrap()));
    }

    #[test]
    fn deserializing_quantities_validates_them() {
        assert!(serde_json::from_str::<Seats>("0").is_err());
        assert_eq!(serde_json::from_str::<Seats>("2").unwrap().get(), 2);
        assert!(serde_json::from_str::<Capacity>("-1").is_err());
    }
}
