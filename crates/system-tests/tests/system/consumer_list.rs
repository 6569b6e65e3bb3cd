//! The one list of consumers (`consumers::ALL`) as the benchmarks read it: each registration's
//! in-memory build is the consumer it registers, under the same version rule, so that
//! `consumer-bench` measures every consumer by what the list says of it.

use consumers::{Consumer, ConsumerHandler};
use dead_letters::MemoryDeadLetters;
use test_support::events::envelopes_event;

#[tokio::test]
async fn each_registered_consumer_built_in_memory_is_itself_and_applies_each_version_once() {
    let mut in_memory = 0;
    for registration in consumers::ALL {
        let Some(build) = registration.in_memory else {
            continue; // measured on the local stack only
        };
        in_memory += 1;
        let handler = ConsumerHandler::new(build(), MemoryDeadLetters::default());
        assert_eq!(handler.consumer().name(), registration.name);
        let batch = envelopes_event(
            1,
            &[("01LIST000000000000000000001", 1), ("01LIST000000000000000000001", 2)],
        );
        let (response, first) = handler.handle(&batch).await;
        assert!(
            response.batch_item_failures.is_empty(),
            "{}: {first:?}",
            registration.name
        );
        assert_eq!((first.applied, first.duplicates), (2, 0), "{}", registration.name);
        let (_, again) = handler.handle(&batch).await;
        assert_eq!(
            (again.applied, again.duplicates),
            (0, 2),
            "{}: delivered again",
            registration.name
        );
    }
    assert!(in_memory >= 2, "the projector and the notifier have in-memory stores");
}
