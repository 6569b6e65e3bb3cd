//! The Lambda function around a consumer: the runtime's loop, invoked with Kinesis batches or
//! with Amazon MSK batches as `EVENT_BUS` says, answering each with its partial batch response.

use crate::config::Bus;
use crate::consumer::Consumer;
use crate::dead_letter::DeadLetters;
use crate::handler::{ConsumerHandler, KafkaEventResponse};
use aws_lambda_events::event::kafka::KafkaEvent;
use aws_lambda_events::event::kinesis::KinesisEvent;
use aws_lambda_events::event::streams::KinesisEventResponse;
use lambda_runtime::{LambdaEvent, service_fn};

/// What the runtime's loop ends with: a failed start (its configuration, the runtime API).
pub use lambda_runtime::Error;

/// Answers the function's invocations with `handler` until the runtime stops: Kinesis batches,
/// or batches of the MSK event source mapping, as `bus` says.
pub async fn serve<C: Consumer, D: DeadLetters>(bus: Bus, handler: ConsumerHandler<C, D>) -> Result<(), Error> {
    let handler = &handler;
    match bus {
        // Boxed: two runtimes' futures in one async block overflow the compiler's layout depth.
        Bus::Kinesis => {
            Box::pin(lambda_runtime::run(service_fn(
                move |event: LambdaEvent<KinesisEvent>| async move {
                    Ok::<KinesisEventResponse, Error>(handler.handle(&event.payload).await.0)
                },
            )))
            .await
        }
        Bus::Kafka => {
            Box::pin(lambda_runtime::run(service_fn(
                move |event: LambdaEvent<KafkaEvent>| async move {
                    Ok::<KafkaEventResponse, Error>(handler.handle_kafka(&event.payload).await.0)
                },
            )))
            .await
        }
    }
}

/// The whole function: logs (JSON when Lambda's log format is JSON), `consumer` behind a handler
/// that dead-letters where `config` says (an SQS queue through `aws`'s credentials, or a file)
/// and prints its metrics in `config.metrics_namespace`, then [`serve`].
#[cfg(feature = "sqs")]
pub async fn run<C: Consumer>(consumer: C, config: &crate::Config, aws: &aws_types::SdkConfig) -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let handler = ConsumerHandler::new(consumer, config.dead_letters.open(|| aws_sdk_sqs::Client::new(aws)))
        .with_metrics(crate::metrics::Emitter::Stdout)
        .with_metrics_namespace(&config.metrics_namespace);
    serve(config.bus, handler).await
}
