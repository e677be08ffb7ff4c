//! The push URL of an Official Account or Mini Program, `/wechat/{appId}`
//! (API.md §6.1): the URL check, and pushes in plaintext, safe and
//! compatible mode, XML or JSON, verified, stored durably and answered
//! `success`; then delivered to the app's subscriptions.
//!
//! Checks, in order: the app (404, the Cloud Run probe too), the size (413),
//! the format (400), the probe (200, nothing stored), plaintext to an app
//! that requires encryption (403, before the signature), the signature
//! (401), the receiveid (401), the inner message (400), the store (503).

use std::time::Instant;

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{Map, Value};

use super::body::read_limited;
use super::error::CallbackError;
use super::query::param;
use super::AppState;
use crate::delivery::fan_out::{fan_out, Origin};
use crate::delivery::identity::push_dedup_key;
use crate::domain::{App, AppKind, CorpId, EventId};
use crate::store::{InsertOutcome, NewEvent, PayloadKind};
use crate::wecom::{self, MAX_XML_BYTES};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/wechat/{app_id}").get(verify_url).post(push));
}

/// The two formats a push comes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Format {
    Xml,
    Json,
}

impl Format {
    /// The declared content type decides; without one, the first non-blank
    /// byte. A body that does not parse as its format is 400, not sniffed.
    pub(super) fn of(req: &HttpRequest, body: &[u8]) -> Result<Self, CallbackError> {
        let declared = req
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            });
        match declared.as_deref() {
            Some("application/json") => Ok(Self::Json),
            Some("text/xml" | "application/xml") => Ok(Self::Xml),
            _ => Self::sniff(body),
        }
    }

    fn sniff(body: &[u8]) -> Result<Self, CallbackError> {
        match body.iter().find(|b| !b.is_ascii_whitespace()) {
            Some(b'{') => Ok(Self::Json),
            Some(b'<') => Ok(Self::Xml),
            _ => Err(CallbackError::BadRequest(
                "body is neither XML nor JSON".into(),
            )),
        }
    }

    pub(super) fn fields(self, doc: &[u8]) -> Result<Map<String, Value>, CallbackError> {
        Ok(match self {
            Self::Xml => wecom::xml_message(doc)?,
            Self::Json => wecom::json_message(doc)?,
        })
    }
}

fn app_of(state: &AppState, raw: &str) -> Result<std::sync::Arc<App>, CallbackError> {
    state
        .directory
        .get()
        .app(raw)
        .cloned()
        .ok_or(CallbackError::UnknownApp)
}

/// A query parameter WeChat always sends.
pub(super) fn required(req: &HttpRequest, name: &'static str) -> Result<String, CallbackError> {
    param(req.query_string(), name)
        .filter(|v| !v.is_empty() && v.chars().count() <= 256)
        .ok_or_else(|| {
            CallbackError::BadRequest(format!("query parameter {name} missing or invalid"))
        })
}

/// A signature parameter: missing is unsigned (401), like a wrong one.
fn signature(req: &HttpRequest, name: &'static str) -> Result<String, CallbackError> {
    param(req.query_string(), name)
        .filter(|v| !v.is_empty() && v.chars().count() <= 256)
        .ok_or(CallbackError::BadSignature)
}

/// GET: WeChat checks the URL; `signature` over (token, timestamp, nonce),
/// and `echostr` answered exactly as sent.
#[utoipa::path(get, path = "/wechat/{appId}", tag = "channels", params(("appId" = inline(crate::domain::AppId), Path), ("signature" = String, Query, min_length = 1, max_length = 256), ("timestamp" = String, Query, min_length = 1, max_length = 256), ("nonce" = String, Query, min_length = 1, max_length = 256), ("echostr" = String, Query, min_length = 1)), responses((status = 200, description = "echostr as sent, text/plain"), (status = 400, description = "Malformed"), (status = 401, description = "Bad signature"), (status = 404, description = "Unknown app")))]
#[tracing::instrument(name = "push", level = "debug", skip_all, fields(kind = "verify_url", app_id = %path.as_str()))]
async fn verify_url(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, CallbackError> {
    let app = app_of(&state, &path)?;
    let (signature, timestamp, nonce) = (
        required(&req, "signature")?,
        required(&req, "timestamp")?,
        required(&req, "nonce")?,
    );
    let echostr = param(req.query_string(), "echostr")
        .filter(|v| !v.is_empty())
        .ok_or_else(|| CallbackError::BadRequest("query parameter echostr missing".into()))?;
    if !wecom::verify_signature(app.token.expose(), &timestamp, &nonce, "", &signature) {
        return Err(CallbackError::BadSignature);
    }
    Ok(HttpResponse::Ok().content_type("text/plain").body(echostr))
}

/// What a push came to before it is stored.
enum Read {
    /// WeChat Cloud Run's probe: answered, not stored.
    Probe,
    /// The (decrypted) message as fields.
    Message(Map<String, Value>),
}

/// Verify and decrypt: the message a push carries.
fn read_push(app: &App, req: &HttpRequest, body: &[u8]) -> Result<Read, CallbackError> {
    let format = Format::of(req, body)?;
    if app.kind == AppKind::Store && format == Format::Xml {
        return Err(CallbackError::BadRequest("a shop pushes JSON only".into()));
    }
    let outer = format.fields(body)?;
    if wecom::is_container_probe(&outer) {
        return Ok(Read::Probe);
    }
    let (timestamp, nonce) = (required(req, "timestamp")?, required(req, "nonce")?);
    let encrypted = param(req.query_string(), "encrypt_type").as_deref() == Some("aes");
    if !encrypted {
        if app.require_encryption {
            return Err(CallbackError::EncryptionRequired);
        }
        let signature = signature(req, "signature")?;
        if !wecom::verify_signature(app.token.expose(), &timestamp, &nonce, "", &signature) {
            return Err(CallbackError::BadSignature);
        }
        return Ok(Read::Message(outer));
    }
    let key = app.key.as_ref().ok_or_else(|| {
        CallbackError::BadRequest(
            "encrypted push to an app registered without encodingAESKey".into(),
        )
    })?;
    let sealed = Sealed {
        token: app.token.expose(),
        key,
        receive_id: app.app_id.as_str(),
    };
    sealed.open(req, &outer).map(Read::Message)
}

/// Whose Token and EncodingAESKey an encrypted push is checked and opened
/// with, and the receiveid it must carry.
pub(super) struct Sealed<'a> {
    pub token: &'a str,
    pub key: &'a crate::wecom::EncodingAesKey,
    pub receive_id: &'a str,
}

impl Sealed<'_> {
    /// Safe and compatible mode: `msg_signature` over the ciphertext is
    /// what is verified; the decrypted copy is the message.
    pub(super) fn open(
        &self,
        req: &HttpRequest,
        outer: &Map<String, Value>,
    ) -> Result<Map<String, Value>, CallbackError> {
        let (timestamp, nonce) = (required(req, "timestamp")?, required(req, "nonce")?);
        let msg_signature = signature(req, "msg_signature")?;
        let encrypt = outer
            .get("Encrypt")
            .and_then(Value::as_str)
            .filter(|e| !e.is_empty())
            .ok_or_else(|| CallbackError::BadRequest("encrypted push without Encrypt".into()))?;
        if !wecom::verify_signature(self.token, &timestamp, &nonce, encrypt, &msg_signature) {
            return Err(CallbackError::BadSignature);
        }
        let plain = wecom::decrypt(self.key, encrypt, self.receive_id)?;
        Format::sniff(&plain.message)?.fields(&plain.message)
    }
}

/// Store a push's message for the subscriptions of `source` (and of the
/// provider it came `via`).
pub(super) async fn store_push(
    state: &AppState,
    source: &str,
    source_kind: &'static str,
    via: Option<&str>,
    fields: &Map<String, Value>,
) -> Result<InsertOutcome, CallbackError> {
    let source = CorpId::parse(source).map_err(|e| CallbackError::BadRequest(e.to_string()))?;
    let id = EventId::generate();
    let received_at = state.clock.now();
    let origin = Origin {
        event_id: id.as_str(),
        source: &source,
        source_kind,
        received_at,
        via,
    };
    let routed = fan_out(&state.directory.get(), &origin, Some(fields), None);
    let event = NewEvent {
        dedup_key: push_dedup_key(source.as_str(), fields),
        id,
        source: source.as_str().to_owned(),
        kind: PayloadKind::Json,
        body: Vec::new(),
        query: String::new(),
        received_at,
        message: routed.message,
        deliveries: routed.deliveries,
    };
    Ok(state.dispatcher.enqueue(event).await?)
}

/// POST: a push. Stored durably before `success`.
#[utoipa::path(post, path = "/wechat/{appId}", tag = "channels", params(("appId" = inline(crate::domain::AppId), Path), ("signature" = Option<String>, Query, nullable = false), ("timestamp" = String, Query, min_length = 1, max_length = 256), ("nonce" = String, Query, min_length = 1, max_length = 256), ("encrypt_type" = Option<String>, Query, nullable = false), ("msg_signature" = Option<String>, Query, nullable = false)), request_body(content = String, content_type = "text/xml"), responses((status = 200, description = "success (stored durably, or the Cloud Run probe)"), (status = 400, description = "Malformed"), (status = 401, description = "Bad signature or receiveid"), (status = 403, description = "Plaintext push to an app that requires encryption"), (status = 404, description = "Unknown app"), (status = 413, description = "Over 64 KiB"), (status = 503, description = "Store unavailable")))]
#[tracing::instrument(name = "push", level = "debug", skip_all, fields(kind = "wechat", app_id = %path.as_str()))]
async fn push(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, CallbackError> {
    let started = Instant::now();
    let result = async {
        let app = app_of(&state, &path)?;
        let body = read_limited(payload, MAX_XML_BYTES, state.config.body_timeout).await?;
        let fields = match read_push(&app, &req, &body)? {
            Read::Probe => return Ok(None),
            Read::Message(fields) => fields,
        };
        let outcome = store_push(
            &state,
            app.app_id.as_str(),
            app.kind.as_str(),
            None,
            &fields,
        );
        Ok(Some(outcome.await?))
    }
    .await;
    super::callback::log_outcome(
        &state,
        "wechat",
        &path,
        started,
        &result,
        |outcome| match outcome {
            None => "probe",
            Some(InsertOutcome::Stored) => "accepted",
            Some(InsertOutcome::Duplicate) => "duplicate",
        },
    );
    result.map(|_| {
        HttpResponse::Ok()
            .content_type("text/plain")
            .body("success")
    })
}
