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

/// How many inventory items (shards) hold a slot's seats: 1, the default, keeps them in one item;
/// more lets that many bookings of the slot commit at once (docs/design.md, "Sharded slots").
/// Fixed when the slot is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "u16")]
pub struct ShardCount(u16);

impl ShardCount {
    pub const MAX: u16 = 64;
    pub const ONE: ShardCount = ShardCount(1);

    pub fn new(value: i64) -> Result<Self, ValidationError> {
        if !(1..=i64::from(Self::MAX)).contains(&value) {
            return Err(ValidationError::new(
                "shards",
                format!("must be between 1 and {}", Self::MAX),
            ));
        }
        Ok(Self(value as u16))
    }

    pub fn get(self) -> u16 {
        self.0
    }

    pub fn is_sharded(self) -> bool {
        self.0 > 1
    }
}

impl TryFrom<i64> for ShardCount {
    type Error = ValidationError;
    fn try_from(value: i64) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<ShardCount> for u16 {
    fn from(value: ShardCount) -> Self {
        value.0
    }
}

/// Seats a booking took from one shard of its slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ShardTake {
    pub shard: u16,
    pub seats: u32,
}

/// Where a reservation's seats came from: one take per shard it drew on, which a cancel gives
/// back to the same shards. Empty for a slot of one shard (its one item holds every seat).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Placement(pub Vec<ShardTake>);

impl Placement {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn seats(&self) -> u32 {
        self.0.iter().map(|t| t.seats).sum()
    }
}

/// The shares of `capacity` a new slot of `shards` shards starts with: as even as whole seats
/// allow, the first shards holding one more.
pub fn initial_shares(capacity: u32, shards: ShardCount) -> Vec<u32> {
    let k = u32::from(shards.get());
    (0..k).map(|i| capacity / k + u32::from(i < capacity % k)).collect()
}

/// The shares a slot resized to `capacity` gets, given what each shard has reserved: each keeps
/// its reservations and the free seats are dealt out evenly again, so a resize also evens out
/// shards that bookings drained unevenly. `None` when `capacity` is below what is reserved.
pub fn resized_shares(capacity: u32, reserved: &[u32]) -> Option<Vec<u32>> {
    let total: u32 = reserved.iter().sum();
    let free = capacity.checked_sub(total)?;
    let k = reserved.len().max(1) as u32;
    Some(
        reserved
            .iter()
            .enumerate()
            .map(|(i, r)| r + free / k + u32::from((i as u32) < free % k))
            .collect(),
    )
}

/// Which shards a booking of `seats` draws on, given what each has `available`: shard `first`
/// alone when it holds them (the usual case: bookings start on a random shard, so they rarely
/// meet); else the fewest shards that do, fullest first. `None` when the shards together hold
/// fewer than `seats`.
pub fn plan_take(available: &[u32], seats: u32, first: usize) -> Option<Placement> {
    if available.get(first).is_some_and(|a| *a >= seats) {
        return Some(Placement(vec![ShardTake {
            shard: first as u16,
            seats,
        }]));
    }
    if available.iter().map(|a| u64::from(*a)).sum::<u64>() < u64::from(seats) {
        return None;
    }
    let mut order: Vec<usize> = (0..available.len()).collect();
    // Fullest first; among equals, the one after `first` in turn, so racing bookings spread.
    let turn = |i: usize| (i + available.len() - first % available.len().max(1)) % available.len().max(1);
    order.sort_by_key(|&i| (std::cmp::Reverse(available[i]), turn(i)));
    let mut left = seats;
    let mut takes = Vec::new();
    for i in order {
        if left == 0 {
            break;
        }
        let take = available[i].min(left);
        if take > 0 {
            takes.push(ShardTake {
                shard: i as u16,
                seats: take,
            });
            left -= take;
        }
    }
    takes.sort();
    Some(Placement(takes))
}

/// A slot's inventory. `reserved` never exceeds `capacity`: the store enforces it with a
/// condition on every change, this type only describes the state. For a sharded slot, the sums
/// over its shards.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slot {
    pub slot_id: SlotId,
    pub capacity: Capacity,
    pub reserved: u32,
    pub shards: ShardCount,
}

impl Slot {
    pub fn new(slot_id: SlotId, capacity: Capacity) -> Self {
        Self::sharded(slot_id, capacity, ShardCount::ONE)
    }

    pub fn sharded(slot_id: SlotId, capacity: Capacity, shards: ShardCount) -> Self {
        Self {
            slot_id,
            capacity,
            reserved: 0,
            shards,
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
            shards: ShardCount::ONE,
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
    fn shard_counts_are_one_to_sixty_four() {
        assert_eq!(ShardCount::new(0).unwrap_err().field, "shards");
        assert!(ShardCount::new(1).is_ok_and(|k| !k.is_sharded()));
        assert!(ShardCount::new(64).is_ok_and(|k| k.is_sharded()));
        assert!(ShardCount::new(65).is_err());
    }

    #[test]
    fn a_booking_larger_than_its_first_shard_draws_on_the_fullest_others() {
        assert_eq!(
            plan_take(&[3, 5, 0], 2, 0).unwrap().0,
            [ShardTake { shard: 0, seats: 2 }]
        );
        let plan = plan_take(&[1, 5, 2], 7, 0).unwrap();
        assert_eq!(plan.seats(), 7);
        assert_eq!(
            plan.0,
            [ShardTake { shard: 1, seats: 5 }, ShardTake { shard: 2, seats: 2 }]
        );
        assert_eq!(plan_take(&[1, 1, 1], 4, 2), None);
    }

    #[test]
    fn a_resize_keeps_each_shards_reservations_and_deals_the_free_seats_out_evenly() {
        assert_eq!(initial_shares(10, ShardCount::new(4).unwrap()), [3, 3, 2, 2]);
        assert_eq!(resized_shares(12, &[5, 0, 1]), Some(vec![7, 2, 3]));
        assert_eq!(resized_shares(5, &[5, 1]), None);
    }

    #[test]
    fn deserializing_quantities_validates_them() {
        assert!(serde_json::from_str::<Seats>("0").is_err());
        assert_eq!(serde_json::from_str::<Seats>("2").unwrap().get(), 2);
        assert!(serde_json::from_str::<Capacity>("-1").is_err());
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    fn config() -> ProptestConfig {
        // FUZZ_SCALE (scripts/test.sh --long) runs ten times as many; the domain has no test-support.
        let scale = std::env::var("FUZZ_SCALE")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1);
        ProptestConfig::with_cases(256 * scale)
    }

    proptest! {
        #![proptest_config(config())]

        /// A plan takes exactly the seats asked, never more than a shard has, from each shard at
        /// most once; and there is a plan whenever the shards together hold the seats.
        #[test]
        fn a_plan_exists_exactly_when_the_slot_holds_the_seats(
            available in prop::collection::vec(0u32..20, 1..64usize),
            seats in 1u32..200,
            first in 0usize..64,
        ) {
            let first = first % available.len();
            let total: u32 = available.iter().sum();
            match plan_take(&available, seats, first) {
                None => prop_assert!(total < seats),
                Some(plan) => {
                    prop_assert_eq!(plan.seats(), seats);
                    let mut shards: Vec<u16> = plan.0.iter().map(|t| t.shard).collect();
                    shards.dedup();
                    prop_assert_eq!(shards.len(), plan.0.len());
                    for take in &plan.0 {
                        prop_assert!(take.seats >= 1 && take.seats <= available[usize::from(take.shard)]);
                    }
                    if available[first] >= seats {
                        prop_assert_eq!(plan.0.len(), 1);
                    }
                }
            }
        }

        /// A resize keeps the total exact and every shard at or above what it has reserved; it is
        /// refused exactly when the capacity is below what is reserved.
        #[test]
        fn resized_shares_add_up_and_never_go_below_a_shards_reservations(
            reserved in prop::collection::vec(0u32..50, 1..64usize),
            capacity in 0u32..4_000,
        ) {
            let total: u32 = reserved.iter().sum();
            match resized_shares(capacity, &reserved) {
                None => prop_assert!(capacity < total),
                Some(shares) => {
                    prop_assert_eq!(shares.iter().sum::<u32>(), capacity);
                    for (share, r) in shares.iter().zip(&reserved) {
                        prop_assert!(share >= r);
                    }
                    let free: Vec<u32> = shares.iter().zip(&reserved).map(|(s, r)| s - r).collect();
                    prop_assert!(free.iter().max().unwrap() - free.iter().min().unwrap() <= 1);
                }
            }
        }
    }
}
