//! Which deliveries an accepted push becomes (API.md §6.2, §6.3): its
//! puppet's, if it has one, and one per matching subscription of its source,
//! all carrying the same JSON body; nothing takes it: one `unroutable`
//! delivery, kept for operators with that body.

use serde_json::{Map, Value};

use super::webhook::delivery_body;
use crate::clock::UnixMillis;
use crate::directory::Snapshot;
use crate::domain::CorpId;
use crate::store::NewDelivery;

/// The deliveries of one event, and the body its subscribers receive.
pub struct FanOut {
    pub deliveries: Vec<NewDelivery>,
    pub message: Option<Vec<u8>>,
}

/// An event's identity and origin, as its subscribers see them.
pub struct Origin<'a> {
    pub event_id: &'a str,
    pub source: &'a CorpId,
    /// `official_account`, `mini_program` or `wecom`.
    pub source_kind: &'a str,
    pub received_at: UnixMillis,
}

pub fn fan_out(
    directory: &Snapshot,
    origin: &Origin<'_>,
    fields: Option<&Map<String, Value>>,
    puppet: Option<NewDelivery>,
) -> FanOut {
    let mut deliveries: Vec<NewDelivery> = puppet.into_iter().collect();
    let mut message = None;
    if let Some(fields) = fields {
        for subscription in directory.matching(origin.source.as_str(), fields) {
            deliveries.push(NewDelivery::to_subscription(
                origin.source.clone(),
                &subscription.id,
            ));
        }
        if deliveries.is_empty() || deliveries.iter().any(|d| d.subscription_id.is_some()) {
            message = Some(delivery_body(
                origin.event_id,
                origin.source.as_str(),
                origin.source_kind,
                origin.received_at,
                fields,
            ));
        }
    }
    if deliveries.is_empty() {
        deliveries.push(NewDelivery::to_puppet(origin.source.clone(), None, false));
    }
    FanOut {
        deliveries,
        message,
    }
}
