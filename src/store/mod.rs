//! Persistence: a trait per concern (registrations, the delivery queue, the
//! token cache, operator reads), `Store` for all of them, and one folder per
//! backend (embedded SQLite, MongoDB) with a file per concern.
//!
//! The store owns registrations (and the corp credentials derived from them)
//! and accepted callbacks with their delivery state. The delivery queue's
//! semantics (claim with a lease, coalesce, finish matching the claim) are
//! expressed here as store operations so every backend implements them
//! atomically in its own way.

mod backlog;
mod channels;
mod error;
mod event;
mod ids;
pub mod mongo;
mod providers;
mod puppet;
pub mod records;
mod seal;
pub mod sqlite;
mod timing;
mod token;
pub mod transfer;

use std::sync::Arc;

use async_trait::async_trait;

pub use backlog::{Backlog, BacklogCount, LatestError, Target};
pub use error::StoreError;
pub use event::{
    AttemptResult, Claim, CorpSummary, Delivery, DeliveryFilter, DeliveryStatus, InsertOutcome,
    Keep, KfSummary, Lease, NewDelivery, NewEvent, Outcome, PayloadKind, Retention,
};

pub use channels::Channels;
pub use providers::Providers;
pub use records::{Record, RecordKind, Records};
pub use seal::Sealer;
pub use timing::{Timed, TimingHook, Timings};
pub use token::TokenRecord;
pub use transfer::{Batches, CopiedDelivery, Transfer};

use crate::clock::UnixMillis;
use crate::domain::{
    ClaimId, CorpId, CredentialSet, DeliveryId, EndpointUrl, KfId, Puppet, Registration,
    SubscriptionId,
};

/// Puppet registrations, and the corp credentials they carry.
#[async_trait]
pub trait Registrations: Send + Sync {
    async fn get_puppet(&self, kf_id: &KfId) -> Result<Option<Puppet>, StoreError>;

    /// Upsert by kfId and mark it online.
    async fn save_registration(
        &self,
        reg: &Registration,
        now: UnixMillis,
    ) -> Result<(), StoreError>;

    /// Mark offline. `false` when the kfId is not registered under that corp.
    async fn set_offline(
        &self,
        kf_id: &KfId,
        corp_id: &CorpId,
        now: UnixMillis,
    ) -> Result<bool, StoreError>;

    /// Mark offline a puppet that delivery could not reach, unless it
    /// registered again since `registered_at` (its last registration when the
    /// failures began) or is offline already. `true` when this call took it
    /// offline.
    async fn set_unreachable(
        &self,
        kf_id: &KfId,
        corp_id: &CorpId,
        registered_at: Option<UnixMillis>,
        now: UnixMillis,
    ) -> Result<bool, StoreError>;

    /// Distinct (token, EncodingAESKey) pairs of a corp's registrations, online or not.
    async fn corp_credentials(&self, corp_id: &CorpId) -> Result<Vec<CredentialSet>, StoreError>;

    /// Every corp's distinct credential sets, to fill the in-memory cache.
    async fn all_credentials(&self) -> Result<Vec<(CorpId, CredentialSet)>, StoreError>;

    /// Registrations ordered by kfId, optionally of one corp and/or presence.
    async fn list_puppets(
        &self,
        corp_id: Option<&CorpId>,
        online: Option<bool>,
        limit: usize,
        offset: usize,
    ) -> Result<Vec<Puppet>, StoreError>;

    /// How many kfIds are registered under a corp, online or not.
    async fn count_puppets(&self, corp_id: &CorpId) -> Result<u64, StoreError>;

    async fn delete_puppet(&self, kf_id: &KfId) -> Result<bool, StoreError>;

    async fn list_corps(&self) -> Result<Vec<CorpSummary>, StoreError>;

    /// Replace a corp's callback credentials on its puppets (those that use
    /// `previous_token`, or all of them); returns how many changed.
    async fn rotate_credentials(
        &self,
        corp_id: &CorpId,
        new: &CredentialSet,
        previous_token: Option<&str>,
        now: UnixMillis,
    ) -> Result<u64, StoreError>;

    /// Point a kfId at another endpoint (operators only) and take it as
    /// online there, as a registration would: an operator moves a puppet
    /// to where it runs now. Its corp, or `None` for an unknown kfId.
    async fn move_puppet(
        &self,
        kf_id: &KfId,
        endpoint: &EndpointUrl,
        now: UnixMillis,
    ) -> Result<Option<CorpId>, StoreError>;
}

/// The delivery queue: what production writes while accepting and delivering.
/// Claims carry a lease; finishes match the claim id, so a worker whose lease
/// was taken over cannot overwrite the newer owner.
#[async_trait]
pub trait Queue: Send + Sync {
    /// Store an accepted callback durably. A second event with the same dedup
    /// key is not stored and reported as a duplicate.
    async fn insert_event(&self, event: &NewEvent) -> Result<InsertOutcome, StoreError>;

    /// Lease up to `limit` due events for `claim.owner`, the earliest due
    /// first, each subscription (and the puppets together) a lane of its
    /// own: the lanes in `claim.skip` give none, so one lane's backlog
    /// cannot fill the claims of the others. For coalescible events the
    /// newest waiting sibling of the same (corp, kf) is leased in place of
    /// older ones, which become `superseded`.
    async fn claim_due(&self, claim: &Claim, limit: usize) -> Result<Vec<Delivery>, StoreError>;

    /// Record the end of an attempt. Matches the claim: a worker whose
    /// lease was taken over cannot overwrite the newer owner (returns false).
    async fn finish_attempt(&self, outcome: &Outcome, now: UnixMillis) -> Result<bool, StoreError>;

    /// Record several outcomes at once (one transaction where the backend
    /// has them); one `bool` per item, as `finish_attempt` answers.
    async fn finish_attempts(
        &self,
        outcomes: &[Outcome],
        now: UnixMillis,
    ) -> Result<Vec<bool>, StoreError> {
        let mut recorded = Vec::with_capacity(outcomes.len());
        for outcome in outcomes {
            recorded.push(self.finish_attempt(outcome, now).await?);
        }
        Ok(recorded)
    }

    /// After wake-ups of these (corp, kfId) parked: the newest waiting,
    /// unleased wake-up of each stands for its older ones, which become
    /// `superseded` (the rule `claim_due` applies), so that a kfId whose
    /// puppet is away keeps one waiting wake-up, not one per callback.
    /// Returns how many were superseded.
    async fn coalesce_parked(
        &self,
        kfs: &[(String, String)],
        now: UnixMillis,
    ) -> Result<u64, StoreError>;

    /// Make a kfId's waiting events (parked or in backoff) due now.
    async fn wake_kf(
        &self,
        corp_id: &CorpId,
        kf_id: &KfId,
        now: UnixMillis,
    ) -> Result<u64, StoreError>;

    /// Make a subscription's deliveries waiting in backoff due now (an
    /// operator pointed it at a working endpoint).
    async fn wake_subscription(
        &self,
        id: &SubscriptionId,
        now: UnixMillis,
    ) -> Result<u64, StoreError>;

    /// Drop every lease held by `owner` (a restarted instance takes back its
    /// own interrupted claims at once).
    async fn release_claims(&self, owner: &str) -> Result<u64, StoreError>;

    /// Extend to `until` the leases `owner` still holds among `held`
    /// ((delivery id, claim id) pairs); returns the ids still held. One that
    /// is missing was taken over and must not be sent.
    async fn renew_leases(
        &self,
        owner: &str,
        held: &[(DeliveryId, ClaimId)],
        until: UnixMillis,
    ) -> Result<Vec<DeliveryId>, StoreError>;

    /// Earliest `next_attempt_at` of a pending event that nobody holds, to
    /// know how long to sleep (held ones come back at the next poll).
    async fn next_due_at(&self) -> Result<Option<UnixMillis>, StoreError>;

    /// Send a dead (or parked) event again now, with a fresh retry window.
    async fn redrive(&self, id: &DeliveryId, now: UnixMillis) -> Result<bool, StoreError>;

    /// Re-drive every dead letter of a kfId; returns how many.
    async fn redrive_dead_of_kf(&self, kf_id: &KfId, now: UnixMillis) -> Result<u64, StoreError>;

    async fn delete_delivery(&self, id: &DeliveryId) -> Result<bool, StoreError>;

    /// Remove events past their status's retention (`Retention::of`) at
    /// `now`, counted from when they reached that status.
    async fn purge(&self, retention: &Retention, now: UnixMillis) -> Result<u64, StoreError>;
}

/// The access-token cache shared by every manager on one store.
#[async_trait]
pub trait TokenCache: Send + Sync {
    async fn get_token(&self, key: &str) -> Result<Option<TokenRecord>, StoreError>;

    /// Take the refresh lease of a key (creating the record) unless another
    /// holder's lease is still running. Exactly one caller wins.
    async fn try_lease_token(
        &self,
        key: &str,
        owner: &str,
        now: UnixMillis,
        until: UnixMillis,
    ) -> Result<bool, StoreError>;

    /// Store the outcome of a refresh and release the lease.
    async fn save_token(&self, key: &str, record: &TokenRecord) -> Result<(), StoreError>;

    /// Give the lease back without a result (the upstream call failed).
    async fn release_token_lease(&self, key: &str, owner: &str) -> Result<(), StoreError>;

    /// Mark a forced refresh unless one happened since `not_before`.
    async fn mark_token_forced(
        &self,
        key: &str,
        now: UnixMillis,
        not_before: UnixMillis,
    ) -> Result<bool, StoreError>;

    /// Drop exactly this token (compare-and-swap on its value): a late
    /// complaint about an old token never discards a newer one.
    async fn invalidate_access_token(&self, token: &str) -> Result<u64, StoreError>;

    /// Every key the cache holds (for `store copy`).
    async fn token_keys(&self) -> Result<Vec<String>, StoreError>;
}

/// What operators (admin API, CLI, metrics) read about the queue.
#[async_trait]
pub trait OperatorReads: Send + Sync {
    async fn get_delivery(&self, id: &DeliveryId) -> Result<Option<Delivery>, StoreError>;

    /// Events for operators, newest first.
    async fn list_deliveries(&self, filter: &DeliveryFilter) -> Result<Vec<Delivery>, StoreError>;

    async fn kf_summary(&self, kf_id: &KfId) -> Result<KfSummary, StoreError>;

    /// What waits for each target (pending, parked, dead), the longest
    /// waiting first (`Backlog::gather`).
    async fn backlogs(&self) -> Result<Vec<Backlog>, StoreError>;

    /// (status, count, oldest received_at) of the waiting states, for metrics.
    async fn queue_stats(
        &self,
    ) -> Result<Vec<(DeliveryStatus, u64, Option<UnixMillis>)>, StoreError>;
}

/// Commands of one name sent to a database server so far, and the
/// documents they wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommandCount {
    pub commands: u64,
    pub written: u64,
}

/// A whole store: every concern, and a health check.
#[async_trait]
pub trait Store:
    Registrations + Queue + TokenCache + OperatorReads + Records + Transfer + 'static
{
    /// Cheap round trip proving the store answers.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Commands sent to a database server so far, by name, with the
    /// documents they wrote (MongoDB with `MONGO_COMMAND_COUNTS`; else none).
    fn command_counts(&self) -> Vec<(String, CommandCount)> {
        Vec::new()
    }

    /// Report how long the store's own work takes (`Timed`), where it
    /// measures any (the embedded store).
    fn report_timings(&self, _to: Arc<dyn Timings>) {}
}
