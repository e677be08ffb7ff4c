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
