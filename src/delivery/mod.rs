//! Getting accepted events to puppets: claim with a lease, send, record the
//! outcome, retry with backoff, park when nobody is online, give up into dead
//! letters after the retry window.

mod dispatcher;
pub mod fan_out;
mod gate;
mod guard;
pub mod identity;
mod policy;
mod routes;
pub mod sender;
mod settings;
mod slots;
pub mod webhook;
mod write_health;

pub use dispatcher::{Dispatcher, DispatcherHandle, Step};
pub use guard::{EndpointGuard, HostResolver, SystemResolver};
pub use policy::RetryPolicy;
pub use sender::{SendFailure, Sender};
pub use settings::DeliveryConfig;
pub use write_health::WriteHealth;

use crate::clock::UnixMillis;
use crate::domain::{EndpointUrl, KfId};
use crate::store::{Store, StoreError};

/// An operator moves a puppet (admin API or CLI): the kfId is online at its
/// new endpoint, and the wake-ups that waited parked for it (it had been
/// marked offline after connection failures, or deregistered) are due
/// there at once, as after a registration. How many were woken, or `None`
/// for an unknown kfId.
pub async fn move_puppet(
    store: &dyn Store,
    kf_id: &KfId,
    endpoint: &EndpointUrl,
    now: UnixMillis,
) -> Result<Option<u64>, StoreError> {
    let Some(corp_id) = store.move_puppet(kf_id, endpoint, now).await? else {
        return Ok(None);
    };
    store.wake_kf(&corp_id, kf_id, now).await.map(Some)
}
