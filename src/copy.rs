//! `wxkf-manager store copy`: everything a manager keeps, from one store to
//! another (the embedded store to MongoDB when a team outgrows one machine,
//! and back), through the store traits the server uses. Idempotent: what is
//! already there is left as it is, so a second run writes nothing and an
//! interrupted run completes when run again. Sealed secrets move sealed;
//! both stores must be opened with the same `SECRETS_KEY` (each refuses a
//! wrong one when it opens, before anything is copied).

use std::collections::BTreeMap;

use futures_util::TryStreamExt;

use crate::clock::UnixMillis;
use crate::domain::Puppet;
use crate::store::{RecordKind, Store, StoreError};

/// Deliveries per export page.
const PAGE: usize = 500;

/// What a copy did, per kind: (copied, already there).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CopyReport(pub BTreeMap<String, (u64, u64)>);

impl CopyReport {
    fn count(&mut self, kind: impl Into<String>, written: bool) {
        let entry = self.0.entry(kind.into()).or_default();
        if written {
            entry.0 += 1;
        } else {
            entry.1 += 1;
        }
    }

    pub fn written(&self) -> u64 {
        self.0.values().map(|(w, _)| w).sum()
    }
}

/// How many of each kind a store holds (`store copy --check`).
pub type Counts = BTreeMap<String, u64>;

/// Copy everything from `from` into `to`. `progress` hears of each page of
/// deliveries (how many so far).
pub async fn copy(
    from: &dyn Store,
    to: &dyn Store,
    mut progress: impl FnMut(u64),
) -> Result<CopyReport, StoreError> {
    let mut report = CopyReport::default();
    for puppet in all_puppets(from).await? {
        let reg = &puppet.registration;
        let same = to.get_puppet(&reg.kf_id).await?.is_some_and(|there| {
            there.online == puppet.online
                && there.last_online_at == puppet.last_online_at
                && there.offline_since == puppet.offline_since
                && there.registration.endpoint == reg.endpoint
                && there.registration.corp_id == reg.corp_id
                && there.registration.kf_name == reg.kf_name
                && there.registration.corp_secret.ct_eq(&reg.corp_secret)
                && there
                    .registration
                    .credentials
                    .token
                    .ct_eq(&reg.credentials.token)
                && there.registration.credentials.key.expose() == reg.credentials.key.expose()
        });
        if !same {
            // The registration's times come along: registered then, and
            // offline since then.
            let registered = puppet.last_online_at.unwrap_or(UnixMillis::EPOCH);
            to.save_registration(reg, registered).await?;
            if !puppet.online {
                let since = puppet.offline_since.unwrap_or(registered);
                to.set_offline(&reg.kf_id, &reg.corp_id, since).await?;
            }
        }
        report.count("puppets", !same);
    }
    for kind in RecordKind::ALL {
        for record in from.list_records(kind, None).await? {
            let same = to.get_record(kind, &record.id).await?.as_ref() == Some(&record);
            if !same {
                to.put_record(&record).await?;
            }
            report.count(kind.as_str(), !same);
        }
    }
    for key in from.token_keys().await? {
        let Some(record) = from.get_token(&key).await? else {
            continue;
        };
        let there = to.get_token(&key).await?;
        let same = there.as_ref().is_some_and(|t| {
            t.expires_at == record.expires_at
                && t.fetched_at == record.fetched_at
                && t.forced_at == record.forced_at
                && t.access_token.as_ref().map(|s| s.expose())
                    == record.access_token.as_ref().map(|s| s.expose())
        });
        if !same {
            to.save_token(&key, &record).await?;
            // `save_token` keeps the later of two forced-refresh marks.
            to.mark_token_forced(&key, record.forced_at, record.forced_at)
                .await?;
        }
        report.count("tokens", !same);
    }
    let mut batches = from.export_deliveries(PAGE);
    let mut seen = 0u64;
    while let Some(batch) = batches.try_next().await? {
        let written = to.import_deliveries(&batch).await?;
        for (delivery, written) in batch.iter().zip(written) {
            report.count(
                format!("deliveries ({})", delivery.status.as_str()),
                written,
            );
        }
        seen += batch.len() as u64;
        progress(seen);
    }
    Ok(report)
}

/// Every registration, a page at a time.
async fn all_puppets(store: &dyn Store) -> Result<Vec<Puppet>, StoreError> {
    const PUPPETS_PAGE: usize = 1_000;
    let mut all = Vec::new();
    loop {
        let page = store
            .list_puppets(None, None, PUPPETS_PAGE, all.len())
            .await?;
        let full = page.len() == PUPPETS_PAGE;
        all.extend(page);
        if !full {
            return Ok(all);
        }
    }
}

/// How many of each kind a store holds.
pub async fn counts(store: &dyn Store) -> Result<Counts, StoreError> {
    let mut counts = Counts::new();
    for puppet in all_puppets(store).await? {
        let state = if puppet.online { "online" } else { "offline" };
        *counts.entry(format!("puppets ({state})")).or_default() += 1;
    }
    for kind in RecordKind::ALL {
        let n = store.list_records(kind, None).await?.len() as u64;
        counts.insert(kind.as_str().to_owned(), n);
    }
    counts.insert("tokens".into(), store.token_keys().await?.len() as u64);
    let mut batches = store.export_deliveries(PAGE);
    while let Some(batch) = batches.try_next().await? {
        for delivery in &batch {
            *counts
                .entry(format!("deliveries ({})", delivery.status.as_str()))
                .or_default() += 1;
        }
    }
    Ok(counts)
}

/// The kinds whose counts differ: (kind, here, there).
pub fn differences(here: &Counts, there: &Counts) -> Vec<(String, u64, u64)> {
    let mut kinds: Vec<&String> = here.keys().chain(there.keys()).collect();
    kinds.sort();
    kinds.dedup();
    kinds
        .into_iter()
        .filter_map(|k| {
            let (a, b) = (
                here.get(k).copied().unwrap_or(0),
                there.get(k).copied().unwrap_or(0),
            );
            (a != b).then(|| (k.clone(), a, b))
        })
        .collect()
}
