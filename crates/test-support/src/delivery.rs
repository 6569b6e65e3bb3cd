//! What a subscriber of the notifications topic received, read as the product promises it: one
//! delivery per notification, repeats (the same notification id) only within the deduplication
//! window that SNS FIFO absorbs. The local channel (moto) deduplicates only against what its
//! queue still holds, and misses two publishes that arrive at once, so a repeat may reach the
//! test's queue that SNS FIFO would have dropped.

use devstack::channel::ReceivedNotification;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// SNS FIFO's deduplication window.
pub const SNS_FIFO_DEDUP_WINDOW: Duration = Duration::from_secs(300);

/// Each reservation's versions in the order of their first delivery, and how many deliveries
/// were repeats. Panics on a message outside its reservation's message group, or on a repeat
/// later than [`SNS_FIFO_DEDUP_WINDOW`] after the notification's first delivery.
pub fn first_deliveries(received: &[ReceivedNotification]) -> (BTreeMap<String, Vec<u64>>, usize) {
    let mut first_sent: HashMap<&str, u64> = HashMap::new();
    let mut delivered: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut repeats = 0;
    for message in received {
        assert_eq!(
            message.message_group_id.as_deref(),
            Some(message.message.reservation_id.as_str()),
            "a reservation's notifications share its message group"
        );
        let sent = message.sent_timestamp_ms.expect("SentTimestamp");
        match first_sent.entry(message.message.notification_id.as_str()) {
            std::collections::hash_map::Entry::Occupied(first) => {
                let after = Duration::from_millis(sent.saturating_sub(*first.get()));
                assert!(
                    after < SNS_FIFO_DEDUP_WINDOW,
                    "{} repeated {after:?} after its first delivery: beyond SNS FIFO's deduplication window",
                    message.message.notification_id
                );
                repeats += 1;
            }
            std::collections::hash_map::Entry::Vacant(first) => {
                first.insert(sent);
                delivered
                    .entry(message.message.reservation_id.clone())
                    .or_default()
                    .push(message.message.version);
            }
        }
    }
    (delivered, repeats)
}
