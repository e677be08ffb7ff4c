//! Outcomes are recorded as they come, many per store write, then counted
//! and logged.

use std::sync::Arc;

use tokio::sync::mpsc;

use super::{Dispatcher, FINISH_GATHER, MAX_FINISH_BATCH};
use crate::clock::UnixMillis;
use crate::domain::{ClaimId, CorpId, KfId};
use crate::store::{AttemptResult, Delivery, Outcome, StoreError};

/// First pause before recording outcomes again after the store was unavailable.
const RECORD_RETRY: std::time::Duration = std::time::Duration::from_millis(100);

impl Dispatcher {
    /// Record outcomes as they come, many per store write.
    pub(super) async fn finish_loop(self: Arc<Self>, mut finished: mpsc::Receiver<Finished>) {
        while let Some(first) = finished.recv().await {
            // Outcomes are not urgent (a lease lasts far longer): gather them
            // for a moment, so that each write records many.
            let mut batch = vec![first];
            let until = tokio::time::Instant::now() + FINISH_GATHER;
            while batch.len() < MAX_FINISH_BATCH {
                match tokio::time::timeout_at(until, finished.recv()).await {
                    Ok(Some(item)) => batch.push(item),
                    Ok(None) | Err(_) => break,
                }
            }
            self.record(batch).await;
        }
    }

    /// Record one batch of outcomes in one store write; returns how many
    /// were recorded (an outcome whose claim was taken over is not).
    pub(super) async fn record(&self, batch: Vec<Finished>) -> usize {
        if batch.is_empty() {
            return 0;
        }
        {
            let now = self.clock.now();
            // One item per outcome, in order: the answers line up by construction.
            let items: Vec<Outcome> = batch
                .iter()
                .map(|f| Outcome {
                    delivery: f.event.id.clone(),
                    claim: f.claim_id.clone(),
                    result: f.result.clone(),
                })
                .collect();
            let mut outcome = self.store.finish_attempts(&items, now).await;
            // A store that is briefly unreachable gets two more tries: an
            // outcome not recorded is sent again once its lease runs out.
            for wait in [RECORD_RETRY, RECORD_RETRY * 4] {
                if !matches!(
                    outcome,
                    Err(StoreError::Unavailable(_) | StoreError::DiskFull(_))
                ) {
                    break;
                }
                tokio::time::sleep(wait).await;
                outcome = self.store.finish_attempts(&items, now).await;
            }
            {
                let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
                for f in &batch {
                    held.remove(&f.event.id);
                }
            }
            match outcome {
                Ok(recorded) if recorded.len() == batch.len() => {
                    let mut count = 0;
                    let mut parked = std::collections::BTreeSet::new();
                    for (f, recorded) in batch.iter().zip(recorded) {
                        self.record_metrics(&f.event, &f.result, now);
                        log_outcome(&f.event, &f.result, recorded, now);
                        count += usize::from(recorded);
                        if recorded && f.result == AttemptResult::Parked {
                            if let Some(kf) = &f.event.kf_id {
                                parked.insert((f.event.corp_id.clone(), kf.clone()));
                            }
                        }
                    }
                    self.coalesce_parked(&batch, now).await;
                    self.wake_if_registered_meanwhile(parked).await;
                    count
                }
                Ok(recorded) => {
                    tracing::error!(
                        outcomes = batch.len(),
                        answers = recorded.len(),
                        "the store answered for a different number of outcomes"
                    );
                    0
                }
                Err(e) => {
                    tracing::warn!(
                        error = %e,
                        outcomes = batch.len(),
                        "could not record delivery outcomes; their leases will expire and they will be retried"
                    );
                    0
                }
            }
        }
    }

    /// Wake-ups that parked leave one waiting per kfId: the newest stands
    /// for the older ones (as it would when claimed), so a puppet away for
    /// long comes back to one wake-up, not to a pile to wake and supersede.
    async fn coalesce_parked(&self, batch: &[Finished], now: UnixMillis) {
        let mut kfs: Vec<(String, String)> = batch
            .iter()
            .filter(|f| f.result == AttemptResult::Parked && f.event.coalesce)
            .filter_map(|f| Some((f.event.corp_id.clone(), f.event.kf_id.clone()?)))
            .collect();
        if kfs.is_empty() {
            return;
        }
        kfs.sort_unstable();
        kfs.dedup();
        match self.store.coalesce_parked(&kfs, now).await {
            Ok(n) => tracing::debug!(
                kf_ids = kfs.len(),
                superseded = n,
                "parked wake-ups coalesced"
            ),
            // Not lost: they are coalesced when claimed, or by the next parking.
            Err(e) => tracing::warn!(error = %e, "could not coalesce parked wake-ups"),
        }
    }

    /// A kfId that registered here while its delivery was being parked:
    /// the registration's wake-up may have come before the parking was
    /// recorded, so wake its parked deliveries again. Only kfIds registered
    /// here lately and not deregistered since are looked up (parking is
    /// frequent while puppets are away; a store read for each would slow
    /// every outcome).
    async fn wake_if_registered_meanwhile(
        &self,
        parked: std::collections::BTreeSet<(String, String)>,
    ) {
        for (corp, kf) in parked {
            if !self.routes.registered_lately(&kf) {
                continue;
            }
            let (Ok(corp_id), Ok(kf_id)) = (CorpId::parse(&corp), KfId::parse(&kf)) else {
                continue;
            };
            let online = matches!(
                self.store.get_puppet(&kf_id).await,
                Ok(Some(p)) if p.online && p.registration.corp_id == corp_id
            );
            if online {
                let woken = self.store.wake_kf(&corp_id, &kf_id, self.clock.now()).await;
                if matches!(woken, Ok(n) if n > 0) {
                    self.wake.notify_one();
                }
            }
        }
    }

    fn record_metrics(&self, event: &Delivery, result: &AttemptResult, now: UnixMillis) {
        self.metrics.delivery(match result {
            AttemptResult::Delivered => "delivered",
            AttemptResult::Retry { .. } => "failed",
            AttemptResult::Dead { .. } => "dead",
            AttemptResult::Parked => "parked",
            AttemptResult::Superseded { .. } => "superseded",
            AttemptResult::Released => "released",
        });
        if *result == AttemptResult::Delivered {
            self.metrics.delivered_after(now.since(event.received_at));
        }
    }
}

/// An attempt's outcome, with the delivery and the claim it is recorded against.
pub(super) struct Finished {
    pub event: Delivery,
    pub claim_id: ClaimId,
    pub result: AttemptResult,
}

fn log_outcome(event: &Delivery, result: &AttemptResult, recorded: bool, now: UnixMillis) {
    let (id, corp, kf) = (
        &event.id,
        &event.corp_id,
        event.kf_id.as_deref().unwrap_or(""),
    );
    let attempt = event.attempts + 1;
    if !recorded {
        tracing::warn!(delivery_id = %id, corp_id = %corp, kf_id = kf, "lease was taken over before the attempt finished; outcome not recorded");
        return;
    }
    match result {
        AttemptResult::Delivered => {
            tracing::debug!(delivery_id = %id, corp_id = %corp, kf_id = kf, attempt, latency_ms = now.since(event.received_at).as_millis() as u64, "delivered")
        }
        AttemptResult::Retry {
            error,
            next_attempt_at,
        } => tracing::warn!(
            delivery_id = %id, corp_id = %corp, kf_id = kf, attempt, error = %error,
            retry_in_ms = next_attempt_at.since(now).as_millis() as u64, "delivery failed; will retry"
        ),
        AttemptResult::Dead { error } => tracing::error!(
            delivery_id = %id, corp_id = %corp, kf_id = kf, attempt, error = %error,
            "retry window exhausted: dead letter"
        ),
        AttemptResult::Parked => {
            tracing::info!(delivery_id = %id, corp_id = %corp, kf_id = kf, "no online puppet; parked until it registers")
        }
        AttemptResult::Superseded { by } => {
            tracing::debug!(delivery_id = %id, corp_id = %corp, kf_id = kf, superseded_by = %by, "a newer wake-up of this kfId stands for this one")
        }
        AttemptResult::Released => {
            tracing::debug!(delivery_id = %id, corp_id = %corp, kf_id = kf, "not attempted; claim given back")
        }
    }
}
