//! What waits for each target, for operators: the dashboard's table and
//! charts. Both stores count by target and status and find each target's
//! latest error; the fold into one row per target is written once, here.

use std::collections::BTreeMap;

use serde::Serialize;

use super::DeliveryStatus;
use crate::clock::UnixMillis;
use crate::domain::SubscriptionId;

/// Where deliveries go: a kfId's puppet, or a subscription.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Target {
    Puppet { corp_id: String, kf_id: String },
    Subscription(SubscriptionId),
}

impl Target {
    /// A store's row: a subscription's delivery, else its puppet's.
    pub fn of(
        subscription: Option<SubscriptionId>,
        corp_id: String,
        kf_id: Option<String>,
    ) -> Self {
        match subscription {
            Some(id) => Self::Subscription(id),
            None => Self::Puppet {
                corp_id,
                kf_id: kf_id.unwrap_or_default(),
            },
        }
    }

    /// How charts and tables name it.
    pub fn label(&self) -> String {
        match self {
            Self::Puppet { corp_id, kf_id } => format!("puppet {corp_id}/{kf_id}"),
            Self::Subscription(id) => format!("subscription {id}"),
        }
    }
}

/// Deliveries of one target in one status, as a store counts them.
#[derive(Clone, Debug)]
pub struct BacklogCount {
    pub target: Target,
    pub status: DeliveryStatus,
    pub count: u64,
    /// When the earliest of them was accepted.
    pub oldest: Option<UnixMillis>,
}

/// A target's latest error among its pending and dead deliveries.
#[derive(Clone, Debug)]
pub struct LatestError {
    pub target: Target,
    pub at: UnixMillis,
    pub error: String,
}

/// What waits for one target.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Backlog {
    #[serde(skip)]
    pub target: Target,
    pub pending: u64,
    pub parked: u64,
    pub dead: u64,
    /// When the oldest delivery still to be sent (pending or parked) was
    /// accepted.
    #[schema(value_type = Option<i64>)]
    pub oldest_waiting: Option<UnixMillis>,
    pub last_error: Option<String>,
}

impl Backlog {
    fn empty(target: Target) -> Self {
        Self {
            target,
            pending: 0,
            parked: 0,
            dead: 0,
            oldest_waiting: None,
            last_error: None,
        }
    }

    /// One row per target that has anything pending, parked or dead: the
    /// longest waiting first, then the most dead letters.
    pub fn gather(
        counts: impl IntoIterator<Item = BacklogCount>,
        errors: impl IntoIterator<Item = LatestError>,
    ) -> Vec<Backlog> {
        let mut rows: BTreeMap<Target, Backlog> = BTreeMap::new();
        for c in counts {
            let b = rows
                .entry(c.target.clone())
                .or_insert_with(|| Backlog::empty(c.target));
            match c.status {
                DeliveryStatus::Pending => b.pending += c.count,
                DeliveryStatus::Parked => b.parked += c.count,
                DeliveryStatus::Dead => b.dead += c.count,
                _ => continue,
            }
            if c.status != DeliveryStatus::Dead {
                b.oldest_waiting = match (b.oldest_waiting, c.oldest) {
                    (Some(a), Some(o)) => Some(a.min(o)),
                    (a, o) => a.or(o),
                };
            }
        }
        let mut latest: BTreeMap<Target, (UnixMillis, String)> = BTreeMap::new();
        for e in errors {
            if latest.get(&e.target).is_none_or(|(at, _)| e.at > *at) {
                latest.insert(e.target, (e.at, e.error));
            }
        }
        for (target, (_, error)) in latest {
            if let Some(b) = rows.get_mut(&target) {
                b.last_error = Some(error);
            }
        }
        let mut all: Vec<Backlog> = rows.into_values().collect();
        all.sort_by(|a, b| {
            let waiting = |x: &Backlog| x.oldest_waiting.unwrap_or(UnixMillis::MAX);
            waiting(a)
                .cmp(&waiting(b))
                .then(b.dead.cmp(&a.dead))
                .then_with(|| a.target.cmp(&b.target))
        });
        all
    }
}
