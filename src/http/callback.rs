//! `/callback/{corpId}`: WeCom's URL verification and encrypted callbacks, and
//! the gateway's already-decrypted form. Every accepted callback is stored
//! before it is acknowledged; the answer never waits for the puppet.

use std::time::Instant;

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::body::read_limited;
use super::error::CallbackError;
use super::query::param;
use super::AppState;
use crate::delivery::fan_out::{fan_out, Origin};
use crate::delivery::identity::{decrypted_dedup_key, dedup_key};
use crate::directory::Snapshot;
use crate::domain::{CorpId, CredentialSet, EventId, KfId};
use crate::store::{InsertOutcome, NewDelivery, NewEvent, PayloadKind};
use crate::wecom::{self, MAX_XML_BYTES};

pub fn routes(cfg: &mut web::ServiceConfig) {
    // WeCom's own path first: the router tries resources in order, and
    // `{corp_id}` never matches `decrypted/...` (a segment holds no '/').
    cfg.service(
        web::resource("/callback/{corp_id}")
            .get(verify_url)
            .post(encrypted),
    )
    .service(web::resource("/callback/decrypted/{corp_id}").post(decrypted));
}

/// The three signed query parameters every WeCom request carries.
pub(super) struct SignedQuery {
    msg_signature: String,
    timestamp: String,
    nonce: String,
}

impl SignedQuery {
    pub(super) fn from_request(req: &HttpRequest) -> Result<Self, CallbackError> {
        let q = req.query_string();
        let get = |name: &'static str| {
            param(q, name)
                .filter(|v| !v.is_empty() && v.chars().count() <= 256)
                .ok_or_else(|| {
                    CallbackError::BadRequest(format!("query parameter {name} missing or invalid"))
                })
        };
        Ok(Self {
            msg_signature: get("msg_signature")?,
            timestamp: get("timestamp")?,
            nonce: get("nonce")?,
        })
    }

    /// Find the credential set whose token signed `data`.
    pub(super) fn signer<'a>(
        &self,
        sets: &'a [CredentialSet],
        data: &str,
    ) -> Result<&'a CredentialSet, CallbackError> {
        sets.iter()
            .find(|set| {
                wecom::verify_signature(
                    set.token.expose(),
                    &self.timestamp,
                    &self.nonce,
                    data,
                    &self.msg_signature,
                )
            })
            .ok_or(CallbackError::BadSignature)
    }
}

fn corp_from_path(raw: &str) -> Result<CorpId, CallbackError> {
    CorpId::parse(raw).map_err(|e| CallbackError::BadRequest(e.to_string()))
}

/// The sets a corp's callbacks may be signed with: its puppets' and those
/// an operator added (§6.2).
async fn corp_credentials(
    state: &AppState,
    directory: &Snapshot,
    corp: &CorpId,
) -> Result<std::sync::Arc<[CredentialSet]>, CallbackError> {
    let mut sets = state.credentials.get(state.store.as_ref(), corp).await?;
    let added = directory.operator_sets(corp);
    if !added.is_empty() {
        let mut all = sets.to_vec();
        for set in added {
            if !all.iter().any(|s| s.token.expose() == set.token.expose()) {
                all.push(set.clone());
            }
        }
        sets = all.into();
    }
    if sets.is_empty() {
        return Err(CallbackError::UnknownCorp);
    }
    Ok(sets)
}

/// The metrics of one callback (outcome and latency) and its log line: a
/// refusal at `warn`, an acceptance at `debug`. At full load an `info` line
/// per accepted callback cost about a sixth of the HTTP workers' time (span
/// and JSON line, issue 16); `wxkf_callbacks_total` counts every outcome.
/// The handlers' spans are `debug` too, so `source` names the corp or app
/// here.
pub(super) fn log_outcome<T>(
    state: &AppState,
    kind: &'static str,
    source: &str,
    started: Instant,
    result: &Result<T, CallbackError>,
    accepted_as: impl Fn(&T) -> &'static str,
) {
    let elapsed = started.elapsed();
    let latency_us = elapsed.as_micros() as u64;
    let outcome = match result {
        Ok(value) => accepted_as(value),
        Err(e) => e.outcome(),
    };
    state.metrics.callback(kind, outcome);
    if result.is_ok() {
        state.metrics.ack_seconds.observe(elapsed.as_secs_f64());
    }
    match result {
        Ok(_) => tracing::debug!(kind, source, outcome, latency_us, "callback"),
        Err(e) => {
            tracing::warn!(kind, source, outcome = e.outcome(), reason = %e, latency_us, "callback refused")
        }
    }
}

/// GET: WeCom checks the URL; answer the bare decrypted echostr.
#[utoipa::path(get, path = "/callback/{corpId}", tag = "callbacks", params(("corpId" = inline(crate::domain::CorpId), Path), ("msg_signature" = String, Query, min_length = 1, max_length = 256), ("timestamp" = String, Query, min_length = 1, max_length = 256), ("nonce" = String, Query, min_length = 1, max_length = 256), ("echostr" = String, Query, min_length = 1)), responses((status = 200, description = "The decrypted echostr, text/plain, nothing else"), (status = 400, description = "Malformed"), (status = 401, description = "Bad signature or receiveid"), (status = 404, description = "No credentials for this corp")))]
#[tracing::instrument(name = "callback", level = "debug", skip_all, fields(kind = "verify_url", corp_id = %path.as_str()))]
async fn verify_url(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, CallbackError> {
    let started = Instant::now();
    let result = async {
        let corp = corp_from_path(&path)?;
        let query = SignedQuery::from_request(&req)?;
        let echostr = param(req.query_string(), "echostr")
            .filter(|v| !v.is_empty())
            .ok_or_else(|| CallbackError::BadRequest("query parameter echostr missing".into()))?;
        let sets = corp_credentials(&state, &state.directory.get(), &corp).await?;
        let set = query.signer(&sets, &echostr)?;
        let plain = wecom::decrypt(&set.key, &echostr, corp.as_str())?;
        Ok(HttpResponse::Ok()
            .content_type("text/plain")
            .body(plain.message))
    }
    .await;
    log_outcome(&state, "verify_url", &path, started, &result, |_| {
        "verified"
    });
    result
}

/// POST: an encrypted callback.
#[utoipa::path(post, path = "/callback/{corpId}", tag = "callbacks", params(("corpId" = inline(crate::domain::CorpId), Path), ("msg_signature" = String, Query, min_length = 1, max_length = 256), ("timestamp" = String, Query, min_length = 1, max_length = 256), ("nonce" = String, Query, min_length = 1, max_length = 256)), request_body(content = super::schemas::CallbackEnvelope, content_type = "text/xml"), responses((status = 200, description = "success (stored durably)"), (status = 400, description = "Malformed"), (status = 401, description = "Bad signature or receiveid"), (status = 404, description = "No credentials for this corp"), (status = 413, description = "Body over 64 KiB"), (status = 503, description = "Store unavailable: WeCom retries")))]
#[tracing::instrument(name = "callback", level = "debug", skip_all, fields(kind = "encrypted", corp_id = %path.as_str(), kf_id))]
async fn encrypted(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, CallbackError> {
    let started = Instant::now();
    let result = async {
        let corp = corp_from_path(&path)?;
        let query = SignedQuery::from_request(&req)?;
        // One snapshot of what operators configured, for the whole callback.
        let directory = state.directory.get();
        let sets = corp_credentials(&state, &directory, &corp).await?;
        let body = read_limited(payload, MAX_XML_BYTES, state.config.body_timeout).await?;
        let envelope = wecom::parse_envelope(&body)?;
        let crypto_started = Instant::now();
        let set = query.signer(&sets, &envelope.encrypt)?;
        let plain = wecom::decrypt(&set.key, &envelope.encrypt, corp.as_str())?;
        let accepted = Accepted {
            corp: &corp,
            via: None,
            body: &body,
            query: &query,
            crypto_started,
        };
        accept(&state, &directory, accepted, &plain.message).await
    }
    .await;
    log_outcome(&state, "encrypted", &path, started, &result, accepted_label);
    result.map(|_| {
        HttpResponse::Ok()
            .content_type("text/plain")
            .body("success")
    })
}

/// A WeCom callback whose signature and receiveid were checked, about to be
/// stored: to `/callback/{corpId}`, or to a suite's data URL (`via` the suite).
pub(super) struct Accepted<'a> {
    pub corp: &'a CorpId,
    pub via: Option<&'a str>,
    /// The body as WeCom sent it (what a puppet receives).
    pub body: &'a [u8],
    pub query: &'a SignedQuery,
    pub crypto_started: Instant,
}

/// Store a verified callback for its puppet (a `kf_msg_or_event`) and for
/// the matching subscriptions of its corp and of the suite it came via.
pub(super) async fn accept(
    state: &AppState,
    directory: &Snapshot,
    accepted: Accepted<'_>,
    plain: &[u8],
) -> Result<InsertOutcome, CallbackError> {
    let Accepted {
        corp,
        via,
        body,
        query,
        crypto_started,
    } = accepted;
    let message = wecom::parse_message(plain)?;
    state
        .metrics
        .decrypt_seconds
        .observe(crypto_started.elapsed().as_secs_f64());
    let kf_id = message
        .open_kf_id
        .as_deref()
        .and_then(|k| KfId::parse(k).ok());
    if let Some(kf) = &kf_id {
        tracing::Span::current().record("kf_id", kf.as_str());
    }
    let coalesce = message.is_kf_msg_or_event() && state.config.delivery.coalesce;
    // Every field, for subscribers and for the identity of events other
    // than wake-ups; a wake-up nobody subscribed to skips the work.
    let subscribed = directory.has_subscriptions(corp.as_str())
        || via.is_some_and(|v| directory.has_subscriptions(v));
    let fields = (!message.is_kf_msg_or_event() || subscribed)
        .then(|| wecom::xml_message(plain).ok())
        .flatten();
    // Time-ordered: the id index grows at its end instead of at random pages.
    let id = EventId::generate();
    let received_at = state.clock.now();
    let origin = Origin {
        event_id: id.as_str(),
        source: corp,
        source_kind: "wecom",
        received_at,
        via,
    };
    let puppet = kf_id.map(|kf| NewDelivery::to_puppet(corp.clone(), Some(kf), coalesce));
    let routed = fan_out(directory, &origin, fields.as_ref(), puppet);
    let event = NewEvent {
        dedup_key: dedup_key(corp, &message, fields.as_ref()),
        id,
        kind: PayloadKind::Xml,
        body: body.to_vec(),
        query: format!(
            "msg_signature={}&timestamp={}&nonce={}",
            enc(&query.msg_signature),
            enc(&query.timestamp),
            enc(&query.nonce)
        ),
        received_at,
        message: routed.message,
        source: corp.as_str().to_owned(),
        deliveries: routed.deliveries,
    };
    Ok(state.dispatcher.enqueue(event).await?)
}

pub(super) fn accepted_label(outcome: &InsertOutcome) -> &'static str {
    match outcome {
        InsertOutcome::Stored => "accepted",
        InsertOutcome::Duplicate => "duplicate",
    }
}

fn enc(v: &str) -> percent_encoding::PercentEncode<'_> {
    percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC)
}

/// A callback a gateway already decrypted.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct DecryptedBody {
    #[schema(value_type = String, required = true, min_length = 1, max_length = 512)]
    token: Option<String>,
    #[schema(value_type = crate::domain::KfId, inline, required = true)]
    open_kf_id: Option<String>,
}

/// POST: a gateway that already decrypted sends `{token, openKfId}`.
#[utoipa::path(post, path = "/callback/decrypted/{corpId}", tag = "callbacks", params(("corpId" = inline(crate::domain::CorpId), Path)), request_body(content = DecryptedBody, content_type = "application/json"), responses((status = 413, description = "Body over 16 KiB"), (status = 200, description = "roger (stored durably)"), (status = 400, description = "Malformed"), (status = 404, description = "No credentials for this corp"), (status = 503, description = "Store unavailable")))]
#[tracing::instrument(name = "callback", level = "debug", skip_all, fields(kind = "decrypted", corp_id = %path.as_str(), kf_id))]
async fn decrypted(
    state: web::Data<AppState>,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, CallbackError> {
    let started = Instant::now();
    let result = async {
        let corp = corp_from_path(&path)?;
        corp_credentials(&state, &state.directory.get(), &corp).await?;
        let body = read_limited(payload, 16 * 1024, state.config.body_timeout).await?;
        let parsed: DecryptedBody = serde_json::from_slice(&body)
            .map_err(|_| CallbackError::BadRequest("body is not JSON {token, openKfId}".into()))?;
        let token = parsed
            .token
            .filter(|t| !t.is_empty() && t.chars().count() <= 512)
            .ok_or_else(|| {
                CallbackError::BadRequest("token: missing or longer than 512 bytes".into())
            })?;
        let kf = KfId::parse(parsed.open_kf_id.as_deref().unwrap_or("")).map_err(|_| {
            CallbackError::BadRequest(
                "openKfId: must be 1 to 64 characters of [A-Za-z0-9_-]".into(),
            )
        })?;
        tracing::Span::current().record("kf_id", kf.as_str());
        let json = serde_json::json!({ "token": token, "openKfId": kf.as_str() });
        let event = NewEvent {
            // Time-ordered: the id index grows at its end instead of at random pages.
            id: EventId::generate(),
            dedup_key: decrypted_dedup_key(&corp, &kf, &token),
            kind: PayloadKind::Json,
            body: json.to_string().into_bytes(),
            query: String::new(),
            received_at: state.clock.now(),
            message: None,
            source: corp.as_str().to_owned(),
            deliveries: vec![NewDelivery::to_puppet(
                corp,
                Some(kf),
                state.config.delivery.coalesce,
            )],
        };
        Ok(state.dispatcher.enqueue(event).await?)
    }
    .await;
    log_outcome(&state, "decrypted", &path, started, &result, accepted_label);
    result.map(|_| HttpResponse::Ok().content_type("text/plain").body("roger"))
}
