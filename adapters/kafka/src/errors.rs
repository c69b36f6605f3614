//! Driver errors become domain errors here, in one place: a broker that cannot be reached
//! is `Unavailable("kafka", ..)`, a fenced or foreign commit is `Conflict`, the rest is
//! `Internal`.

use folio_domain::Error;
use rskafka::client::error::{Error as RsError, ProtocolError};

pub(crate) const KAFKA: &str = "kafka";

pub(crate) fn unavailable(msg: impl std::fmt::Display) -> Error {
    Error::Unavailable(KAFKA, msg.to_string())
}

/// Maps an rskafka failure. Connection trouble and exhausted retries are `Unavailable`:
/// trying again later may help.
pub(crate) fn from_rskafka(context: &str, e: RsError) -> Error {
    match &e {
        RsError::Connection(_)
        | RsError::Request(_)
        | RsError::RetryFailed(_)
        | RsError::Timeout => unavailable(format!("{context}: {e}")),
        RsError::ServerError { protocol_error, .. } if is_transient(*protocol_error) => {
            unavailable(format!("{context}: {e}"))
        }
        _ => Error::Internal(format!("kafka {context}: {e}")),
    }
}

fn is_transient(e: ProtocolError) -> bool {
    matches!(
        e,
        ProtocolError::LeaderNotAvailable
            | ProtocolError::NotLeaderOrFollower
            | ProtocolError::RequestTimedOut
            | ProtocolError::NotEnoughReplicas
            | ProtocolError::NotEnoughReplicasAfterAppend
            | ProtocolError::NetworkException
            | ProtocolError::BrokerNotAvailable
            | ProtocolError::KafkaStorageError
    )
}
