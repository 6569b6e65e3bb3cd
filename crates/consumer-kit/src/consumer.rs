//! What a team writes: what its consumer does with one event, and where it keeps the version it
//! has applied.

use crate::event::ReservationEvent;
use crate::order::{ApplyOutcome, Version};
use std::error::Error as StdError;
use std::fmt;
use std::future::Future;

type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// A consumer of the events. The handler calls [`Consumer::apply`] with each event of a batch, a
/// reservation's events in order, and does the rest (decoding, holding a reservation back after
/// a failure, dead letters, the answer to Lambda, metrics).
///
/// `apply` must apply the event at most once and only right after its predecessor: read the
/// version the consumer has applied, ask [`decide`](crate::decide), and write the effect with
/// the new version in one conditional write (or use
/// [`VersionedTable`](crate::dynamodb::VersionedTable), which does it on DynamoDB). Events
/// arrive more than once and, after a failure, out of order: the outcome says which.
pub trait Consumer: Send + Sync {
    /// The consumer's name in logs, metrics (the `Function` dimension) and dead letters.
    fn name(&self) -> &str;

    /// Applies `event` if its version is the next one for its reservation.
    fn apply(&self, event: &ReservationEvent) -> impl Future<Output = Result<ApplyOutcome, ConsumerError>> + Send;

    /// The version of `event`'s reservation this consumer has applied so far, read only (for
    /// dry runs, audits and tools).
    fn applied_version(
        &self,
        event: &ReservationEvent,
    ) -> impl Future<Output = Result<Option<Version>, ConsumerError>> + Send;
}

impl<C: Consumer> Consumer for std::sync::Arc<C> {
    fn name(&self) -> &str {
        (**self).name()
    }

    fn apply(&self, event: &ReservationEvent) -> impl Future<Output = Result<ApplyOutcome, ConsumerError>> + Send {
        (**self).apply(event)
    }

    fn applied_version(
        &self,
        event: &ReservationEvent,
    ) -> impl Future<Output = Result<Option<Version>, ConsumerError>> + Send {
        (**self).applied_version(event)
    }
}

/// Any consumer behind one type: for a list of consumers of different types (a tool that feeds
/// whichever consumer it is asked for, a process that runs several).
pub struct BoxConsumer(Box<dyn DynConsumer>);

impl BoxConsumer {
    pub fn new(consumer: impl Consumer + 'static) -> Self {
        Self(Box::new(consumer))
    }
}

type BoxFuture<'a, T> = std::pin::Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// [`Consumer`] with boxed futures, so that it can be a trait object.
trait DynConsumer: Send + Sync {
    fn name(&self) -> &str;
    fn apply<'a>(&'a self, event: &'a ReservationEvent) -> BoxFuture<'a, Result<ApplyOutcome, ConsumerError>>;
    fn applied_version<'a>(
        &'a self,
        event: &'a ReservationEvent,
    ) -> BoxFuture<'a, Result<Option<Version>, ConsumerError>>;
}

impl<C: Consumer> DynConsumer for C {
    fn name(&self) -> &str {
        Consumer::name(self)
    }

    fn apply<'a>(&'a self, event: &'a ReservationEvent) -> BoxFuture<'a, Result<ApplyOutcome, ConsumerError>> {
        Box::pin(Consumer::apply(self, event))
    }

    fn applied_version<'a>(
        &'a self,
        event: &'a ReservationEvent,
    ) -> BoxFuture<'a, Result<Option<Version>, ConsumerError>> {
        Box::pin(Consumer::applied_version(self, event))
    }
}

impl Consumer for BoxConsumer {
    fn name(&self) -> &str {
        self.0.name()
    }

    async fn apply(&self, event: &ReservationEvent) -> Result<ApplyOutcome, ConsumerError> {
        self.0.apply(event).await
    }

    async fn applied_version(&self, event: &ReservationEvent) -> Result<Option<Version>, ConsumerError> {
        self.0.applied_version(event).await
    }
}

/// What the handler does with a failed `apply`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// May succeed later (throttling, a timeout, a store that is down): the record is handed back
    /// to Lambda and the reservation's later records wait.
    Retry,
    /// Lost a race with another writer of the same items: retried like `Retry`, counted apart
    /// (`TransactionConflicts`) so that contention is not read as load.
    Contended,
    /// Can never succeed as it is (the store refuses the write itself): the record is
    /// dead-lettered with the error as the reason, and the shard moves on.
    Rejected,
}

/// A failed `apply` or `applied_version`: its kind, and the error itself as the source. It
/// displays as its source and gives the source's causes, so logs and dead letters show the
/// store's own error chain.
pub struct ConsumerError {
    pub kind: ErrorKind,
    source: BoxError,
}

impl ConsumerError {
    pub fn new(kind: ErrorKind, source: impl Into<BoxError>) -> Self {
        Self {
            kind,
            source: source.into(),
        }
    }

    pub fn retry(source: impl Into<BoxError>) -> Self {
        Self::new(ErrorKind::Retry, source)
    }

    pub fn contended(source: impl Into<BoxError>) -> Self {
        Self::new(ErrorKind::Contended, source)
    }

    pub fn rejected(source: impl Into<BoxError>) -> Self {
        Self::new(ErrorKind::Rejected, source)
    }

    /// The error the consumer reported.
    pub fn get_ref(&self) -> &(dyn StdError + Send + Sync + 'static) {
        &*self.source
    }
}

impl fmt::Debug for ConsumerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsumerError")
            .field("kind", &self.kind)
            .field("source", &self.source)
            .finish()
    }
}

impl fmt::Display for ConsumerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.source.fmt(f)
    }
}

impl StdError for ConsumerError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source.source()
    }
}

/// An error and its causes, outermost first, joined by ": ": one field for a log line or a dead
/// letter's reason.
pub fn error_chain(error: &dyn StdError) -> String {
    let mut chain = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        chain.push_str(": ");
        chain.push_str(&cause.to_string());
        source = cause.source();
    }
    chain
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("PutItem failed")]
    struct Store(#[source] std::io::Error);

    #[test]
    fn an_error_reads_as_the_stores_own_chain() {
        let error = ConsumerError::rejected(Store(std::io::Error::other("item too large")));
        assert_eq!(error.kind, ErrorKind::Rejected);
        assert_eq!(error_chain(&error), "PutItem failed: item too large");
        assert!(error.get_ref().is::<Store>());
    }
}
