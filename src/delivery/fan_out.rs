//! Which deliveries an accepted push becomes (API.md §6.2, §6.3, §7): its
//! puppet's, if it has one, and one per matching subscription of its source
//! (and of the provider it came through), all carrying the same JSON body;
//! nothing takes it: one `unroutable` delivery, kept for operators with
//! that body.

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
    /// `official_account`, `mini_program`, `wecom`, `wecom_suite`, ...
    pub source_kind: &'a str,
    pub received_at: UnixMillis,
    /// The provider (a suite) a customer's push came through: its
    /// subscriptions take the push too.
    pub via: Option<&'a str>,
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
        let sources = std::iter::once(origin.source.as_str()).chain(origin.via);
        for source in sources {
            for subscription in directory.matching(source, fields) {
                deliveries.push(NewDelivery::to_subscription(
                    origin.source.clone(),
                    &subscription.id,
                ));
            }
        }
        if deliveries.is_empty() || deliveries.iter().any(|d| d.subscription_id.is_some()) {
            message = Some(delivery_body(origin, fields));
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
