//! The notifier: tells the guest about each confirmation and cancellation, once, on the
//! notifications SNS FIFO topic.

use crate::{Publishes, Registration, domain_event};
use adapters::{DynamoNotifications, SnsTopic};
use domain::ports::NotificationSender;
use domain::{ApplyOutcome, Notification, Version};
use reservation_events_consumer::{BoxConsumer, Consumer, ConsumerError, ReservationEvent};
use settings::names;

pub const REGISTRATION: Registration = Registration {
    name: "notifier",
    about: "Feed the notifier: notifications, once per event.",
    table: names::NOTIFICATIONS_TABLE,
    build: |wiring| {
        let vars = settings::Vars(wiring.vars);
        let table = vars.name(names::NOTIFICATIONS_TABLE)?;
        let retention = crate::ConsumerConfig::notification_retention_from_vars(wiring.vars)?;
        let topic_arn = match wiring.publishes {
            Publishes::Yes => vars.required(
                names::NOTIFICATIONS_TOPIC_ARN,
                "the ARN of the notifications SNS FIFO topic (stack output NotificationsTopicArn)",
            )?,
            // Never published to: it reads its progress only.
            Publishes::No => vars.get(names::NOTIFICATIONS_TOPIC_ARN).unwrap_or_default().to_owned(),
        };
        let topic = SnsTopic::new(aws_sdk_sns::Client::new(wiring.sdk), topic_arn);
        let notifications = DynamoNotifications::new(wiring.dynamodb.clone(), table, retention, topic)
            .with_metrics(wiring.metrics.clone());
        Ok(BoxConsumer::new(Notifier::new(notifications)))
    },
    #[cfg(feature = "test-util")]
    in_memory: Some(|| BoxConsumer::new(Notifier::new(adapters::InMemoryNotifications::default()))),
};

pub struct Notifier<N> {
    sender: N,
}

impl<N> Notifier<N> {
    pub fn new(sender: N) -> Self {
        Self { sender }
    }
}

impl<N: NotificationSender> Consumer for Notifier<N> {
    fn name(&self) -> &str {
        REGISTRATION.name
    }

    async fn apply(&self, event: &ReservationEvent) -> Result<ApplyOutcome, ConsumerError> {
        let event = domain_event(event)?;
        Ok(self.sender.send_once(&Notification::for_event(&event)).await?)
    }

    async fn applied_version(&self, event: &ReservationEvent) -> Result<Option<Version>, ConsumerError> {
        let event = domain_event(event)?;
        Ok(self.sender.notified_version(event.reservation_id()).await?)
    }
}
