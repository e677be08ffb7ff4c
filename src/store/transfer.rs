//! Moving everything a store keeps to another backend (`store copy`): the
//! deliveries with their events, in a form both backends export and import.
//! Registrations, records and tokens move through the traits the server
//! uses; only the queue needs this, because production never reads a
//! delivery back whole (superseded-by, last change) nor writes one in a
//! given state.

use async_trait::async_trait;
use futures_util::stream::BoxStream;

use super::{DeliveryStatus, PayloadKind, StoreError};
use crate::clock::UnixMillis;
use crate::domain::{DeliveryId, EventId, SubscriptionId};

/// One delivery with its event, as stored (leases are not carried: a copy
/// is taken by whichever manager starts on it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopiedDelivery {
    pub event_id: EventId,
    pub source: String,
    pub dedup_key: String,
    pub kind: PayloadKind,
    pub body: Vec<u8>,
    pub query: String,
    pub received_at: UnixMillis,
    pub message: Option<Vec<u8>>,
    pub id: DeliveryId,
    pub corp_id: String,
    pub kf_id: Option<String>,
    pub subscription_id: Option<SubscriptionId>,
    pub coalesce: bool,
    pub status: DeliveryStatus,
    pub attempts: u32,
    pub window_start: UnixMillis,
    pub next_attempt_at: UnixMillis,
    pub last_error: Option<String>,
    pub delivered_at: Option<UnixMillis>,
    pub superseded_by: Option<String>,
    pub updated_at: UnixMillis,
}

/// An export: batches of deliveries, as the backend reads them.
pub type Batches<'a> = BoxStream<'a, Result<Vec<CopiedDelivery>, StoreError>>;

#[async_trait]
pub trait Transfer: Send + Sync {
    /// Every delivery, in batches of about `batch`, in an order that does
    /// not change while nothing is written (one read of the store, not one
    /// query per batch: a test server sorts again for each query).
    fn export_deliveries(&self, batch: usize) -> Batches<'_>;

    /// Take one in: its event unless one with its dedup key is there, the
    /// delivery unless one with its id is there. Whether anything was written.
    async fn import_delivery(&self, delivery: &CopiedDelivery) -> Result<bool, StoreError>;

    /// A page at once (as `import_delivery` each, in fewer round trips where
    /// the backend can); one answer per delivery.
    async fn import_deliveries(
        &self,
        deliveries: &[CopiedDelivery],
    ) -> Result<Vec<bool>, StoreError> {
        let mut written = Vec::with_capacity(deliveries.len());
        for delivery in deliveries {
            written.push(self.import_delivery(delivery).await?);
        }
        Ok(written)
    }
}
