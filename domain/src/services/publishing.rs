use std::sync::Arc;

use async_trait::async_trait;

use crate::events::Event;
use crate::ports::{EventPublisher, OutgoingRecord, RecordPublisher};
use crate::Result;

/// Header carrying the event id, so consumers can de-duplicate without decoding.
pub const EVENT_ID_HEADER: &str = "event_id";
/// Header carrying the event type.
pub const EVENT_TYPE_HEADER: &str = "type";

/// The record of an event: JSON value, keyed as the topic catalog says, with `event_id` and
/// `type` also in headers.
pub fn event_record(event: &Event) -> OutgoingRecord {
    OutgoingRecord {
        topic: event.topic(),
        key: event.key().into_bytes(),
        value: event.encode(),
        headers: vec![
            (EVENT_ID_HEADER.into(), event_id_bytes(event)),
            (
                EVENT_TYPE_HEADER.into(),
                event.type_name().as_bytes().to_vec(),
            ),
        ],
    }
}

/// The event id as the header carries it (hyphenated, lower case), in one allocation of
/// its exact size rather than through the formatter.
fn event_id_bytes(event: &Event) -> Vec<u8> {
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    event
        .event_id()
        .0
        .hyphenated()
        .encode_lower(&mut buf)
        .as_bytes()
        .to_vec()
}

/// Publishes typed events on a record bus.
pub struct BusEventPublisher {
    records: Arc<dyn RecordPublisher>,
}

impl BusEventPublisher {
    pub fn new(records: Arc<dyn RecordPublisher>) -> Self {
        BusEventPublisher { records }
    }
}

#[async_trait]
impl EventPublisher for BusEventPublisher {
    async fn publish(&self, event: &Event) -> Result<()> {
        self.records.send(event_record(event)).await
    }
}
