//! Accepted callbacks and their delivery state, as the store keeps them.

use std::time::Duration;

use serde::Serialize;

use crate::clock::UnixMillis;
use crate::domain::{ClaimId, CorpId, DeliveryId, EventId, KfId, SubscriptionId};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStatus {
    /// Waiting for its next attempt (due at `next_attempt_at`).
    Pending,
    /// No online puppet for its kfId; waits for a registration.
    Parked,
    Delivered,
    /// Retry window exhausted; kept for an operator.
    Dead,
    /// A newer wake-up for the same kfId was delivered instead.
    Superseded,
    /// No OpenKfId to route by (another kind of event); kept for operators.
    Unroutable,
}

/// How long an event is kept in a status: the one retention rule of both
/// stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// Still to be delivered: never removed for its age.
    UntilFinished,
    /// Done: kept for the dedup window (`RETENTION_HOURS`, at least 24 h).
    Finished,
    /// For an operator to look at (dead letters, unroutable events): 30 days.
    ForOperators,
}

/// The configured horizons of `Keep`.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub finished: Duration,
    pub dead: Duration,
}

impl Retention {
    /// How long an event that reached `status` is kept; `None`: until it
    /// moves on.
    pub fn of(&self, status: DeliveryStatus) -> Option<Duration> {
        match status.keep() {
            Keep::UntilFinished => None,
            Keep::Finished => Some(self.finished),
            Keep::ForOperators => Some(self.dead),
        }
    }

    /// When an event that reached `status` at `at` may be removed.
    pub fn expires_at(&self, status: DeliveryStatus, at: UnixMillis) -> Option<UnixMillis> {
        self.of(status).map(|keep| at.plus(keep))
    }

    /// Per status with a horizon: events that reached it before this time
    /// may be removed at `now`.
    pub fn cutoffs(&self, now: UnixMillis) -> Vec<(DeliveryStatus, UnixMillis)> {
        DeliveryStatus::ALL
            .into_iter()
            .filter_map(|s| Some((s, now.minus(self.of(s)?))))
            .collect()
    }
}

impl DeliveryStatus {
    pub const ALL: [DeliveryStatus; 6] = [
        Self::Pending,
        Self::Parked,
        Self::Delivered,
        Self::Dead,
        Self::Superseded,
        Self::Unroutable,
    ];

    /// The statuses of events still to be delivered (`Keep::UntilFinished`).
    pub fn waiting() -> impl Iterator<Item = DeliveryStatus> {
        Self::ALL
            .into_iter()
            .filter(|s| s.keep() == Keep::UntilFinished)
    }

    pub fn keep(self) -> Keep {
        match self {
            Self::Pending | Self::Parked => Keep::UntilFinished,
            Self::Delivered | Self::Superseded => Keep::Finished,
            Self::Dead | Self::Unroutable => Keep::ForOperators,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Parked => "parked",
            Self::Delivered => "delivered",
            Self::Dead => "dead",
            Self::Superseded => "superseded",
            Self::Unroutable => "unroutable",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => Self::Pending,
            "parked" => Self::Parked,
            "delivered" => Self::Delivered,
            "dead" => Self::Dead,
            "superseded" => Self::Superseded,
            "unroutable" => Self::Unroutable,
            _ => return None,
        })
    }
}

/// How the event is delivered: the original XML, or the gateway JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PayloadKind {
    Xml,
    Json,
}

impl PayloadKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Xml => "xml",
            Self::Json => "json",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "xml" => Some(Self::Xml),
            "json" => Some(Self::Json),
            _ => None,
        }
    }
}

/// An accepted callback about to be stored: the event once, with each of
/// its deliveries.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub id: EventId,
    /// Who sent it: the corpId (an appId for Official Account pushes).
    pub source: String,
    /// Identity for deduplicating WeChat's and WeCom's resends.
    pub dedup_key: String,
    pub kind: PayloadKind,
    /// The original XML byte for byte, or the JSON to deliver.
    pub body: Vec<u8>,
    /// `msg_signature=..&timestamp=..&nonce=..` for XML events, else empty.
    pub query: String,
    pub received_at: UnixMillis,
    /// What a subscriber receives (API.md §6.3), when a subscription takes
    /// the event: the same bytes for each of its deliveries.
    pub message: Option<Vec<u8>>,
    /// One per target. An event no target takes has one delivery without a
    /// target, stored `unroutable` so that operators see it.
    pub deliveries: Vec<NewDelivery>,
}

/// One target of an accepted callback, about to be stored.
#[derive(Debug, Clone)]
pub struct NewDelivery {
    pub id: DeliveryId,
    /// The corp (or, for a subscription, the source: an appId or corpId).
    pub corp_id: CorpId,
    /// The OpenKfId of the puppet it goes to.
    pub kf_id: Option<KfId>,
    /// The subscription it goes to. Neither target: unroutable.
    pub subscription_id: Option<SubscriptionId>,
    /// A "pull now" wake-up that newer ones for the same kfId replace.
    pub coalesce: bool,
    /// Stored already claimed by this manager, which delivers it straight
    /// from memory (no claim round trip). `None`: the dispatcher claims it.
    pub lease: Option<Lease>,
}

impl NewDelivery {
    /// A delivery to the puppet of a kfId (`None`: unroutable), with a new
    /// time-ordered id.
    pub fn to_puppet(corp_id: CorpId, kf_id: Option<KfId>, coalesce: bool) -> Self {
        Self {
            id: DeliveryId::generate(),
            corp_id,
            kf_id,
            subscription_id: None,
            coalesce,
            lease: None,
        }
    }

    /// A delivery to a subscription of `source`, with a new time-ordered id.
    pub fn to_subscription(source: CorpId, subscription_id: &SubscriptionId) -> Self {
        Self {
            subscription_id: Some(subscription_id.clone()),
            ..Self::to_puppet(source, None, false)
        }
    }

    /// Whether it has somewhere to go (a puppet or a subscription).
    pub fn routed(&self) -> bool {
        self.kf_id.is_some() || self.subscription_id.is_some()
    }

    /// The status it is stored with.
    pub fn status(&self) -> DeliveryStatus {
        if self.routed() {
            DeliveryStatus::Pending
        } else {
            DeliveryStatus::Unroutable
        }
    }
}

/// A claim taken at insert time.
#[derive(Debug, Clone)]
pub struct Lease {
    pub owner: String,
    pub until: UnixMillis,
    pub claim_id: ClaimId,
}

impl NewEvent {
    /// The deliveries as the dispatcher sees them once stored, without
    /// reading them back.
    pub fn into_deliveries(self) -> Vec<Delivery> {
        self.deliveries
            .into_iter()
            .map(|d| Delivery {
                status: d.status(),
                id: d.id,
                event_id: self.id.clone(),
                corp_id: d.corp_id.as_str().to_owned(),
                kf_id: d.kf_id.map(|k| k.as_str().to_owned()),
                subscription_id: d.subscription_id,
                kind: self.kind,
                body: self.body.clone(),
                message: self.message.clone(),
                query: self.query.clone(),
                coalesce: d.coalesce,
                attempts: 0,
                received_at: self.received_at,
                window_start: self.received_at,
                next_attempt_at: self.received_at,
                last_error: None,
                delivered_at: None,
                claim_id: d.lease.map(|l| l.claim_id),
            })
            .collect()
    }
}

/// One delivery of a stored event, with the event's payload.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    pub id: DeliveryId,
    /// The event it delivers (stored once for all of its deliveries).
    pub event_id: EventId,
    pub corp_id: String,
    pub kf_id: Option<String>,
    pub subscription_id: Option<SubscriptionId>,
    pub kind: PayloadKind,
    #[serde(skip)]
    pub body: Vec<u8>,
    /// What a subscriber receives (§6.3), for a subscription's delivery.
    #[serde(skip)]
    pub message: Option<Vec<u8>>,
    #[serde(skip)]
    pub query: String,
    pub coalesce: bool,
    pub status: DeliveryStatus,
    pub attempts: u32,
    pub received_at: UnixMillis,
    /// The retry window runs from here: acceptance, or the last re-drive.
    pub window_start: UnixMillis,
    pub next_attempt_at: UnixMillis,
    pub last_error: Option<String>,
    pub delivered_at: Option<UnixMillis>,
    #[serde(skip)]
    pub claim_id: Option<ClaimId>,
}

/// The end of one attempt, to record: which delivery, under which claim
/// (a worker whose claim was taken over records nothing), and how it went.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub delivery: DeliveryId,
    pub claim: ClaimId,
    pub result: AttemptResult,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsertOutcome {
    Stored,
    Duplicate,
}

impl InsertOutcome {
    /// What an insert refused on the dedup key came to, given the id of the
    /// event that holds the key: the event itself when an earlier try of
    /// this very write landed (a driver retries a write whose answer was
    /// lost), so it is stored and must be delivered; anything else is a
    /// resend.
    pub fn of_dedup_conflict(event_id: &str, holder: Option<&str>) -> Self {
        if holder == Some(event_id) {
            Self::Stored
        } else {
            Self::Duplicate
        }
    }
}

/// Who claims, when, for how long.
#[derive(Debug, Clone)]
pub struct Claim {
    pub owner: String,
    pub now: UnixMillis,
    pub lease_until: UnixMillis,
    /// Subscriptions this claimer already holds its share of: none of their
    /// deliveries is taken this time, so a subscriber draining a long
    /// backlog leaves the rest of the claim to everyone else's.
    pub skip: Vec<SubscriptionId>,
}

impl Claim {
    pub fn new(owner: &str, now: UnixMillis, lease_until: UnixMillis) -> Self {
        Self {
            owner: owner.to_owned(),
            now,
            lease_until,
            skip: Vec::new(),
        }
    }
}

/// Which events an operator lists; newest first.
#[derive(Debug, Clone, Default)]
pub struct DeliveryFilter {
    pub status: Option<DeliveryStatus>,
    pub corp_id: Option<String>,
    pub kf_id: Option<String>,
    pub limit: usize,
    pub offset: usize,
}

/// Delivery counts of one kfId, for operators.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KfSummary {
    pub pending: u64,
    pub parked: u64,
    pub dead: u64,
    pub last_delivered_at: Option<UnixMillis>,
}

/// A corp as operators see it: never a secret.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CorpSummary {
    pub corp_id: String,
    pub credential_sets: u64,
    pub puppets: u64,
    pub online: u64,
}

/// How an attempt (or a look for the puppet) ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptResult {
    Delivered,
    Retry {
        next_attempt_at: UnixMillis,
        error: String,
    },
    Dead {
        error: String,
    },
    /// No online puppet: not an attempt; waits for a registration.
    Parked,
    /// A newer wake-up of the same kfId arrived while this one waited for
    /// its turn: that one is delivered instead. Not an attempt.
    Superseded {
        by: String,
    },
    /// Not attempted (the manager is stopping): the claim is given back and
    /// the event is due again at once, as it was.
    Released,
}

impl AttemptResult {
    /// The status the delivery moves to (`None`: it stays as it was).
    pub fn status(&self) -> Option<DeliveryStatus> {
        match self {
            Self::Delivered => Some(DeliveryStatus::Delivered),
            Self::Retry { .. } => Some(DeliveryStatus::Pending),
            Self::Dead { .. } => Some(DeliveryStatus::Dead),
            Self::Parked => Some(DeliveryStatus::Parked),
            Self::Superseded { .. } => Some(DeliveryStatus::Superseded),
            Self::Released => None,
        }
    }
}
