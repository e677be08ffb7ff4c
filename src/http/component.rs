//! An Open Platform component's push URLs (API.md §7.2): the event URL
//! (授权事件接收URL: verify tickets, authorizations) and the message URL
//! configured with `$APPID$` (every authorized account's own pushes). Both
//! are verified and decrypted with the component's one Token and
//! EncodingAESKey, the receiveid always the component's appId; stored
//! durably and answered at once: the manager never calls WeChat before
//! answering.

use std::sync::Arc;
use std::time::Instant;

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{Map, Value};

use super::body::read_limited;
use super::callback::{accepted_label, log_outcome};
use super::error::CallbackError;
use super::provider_push::{field, handle_push, success, COMPONENT};
use super::query::param;
use super::wechat::{store_push, Format, Sealed};
use super::AppState;
use crate::domain::{AppId, Component};
use crate::wecom::MAX_XML_BYTES;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/component/{component_id}/events").post(events))
        .service(web::resource("/component/{component_id}/messages/{app_id}").post(messages));
}

fn component_of(state: &AppState, raw: &str) -> Result<Arc<Component>, CallbackError> {
    state
        .directory
        .get()
        .component(raw)
        .cloned()
        .ok_or(CallbackError::UnknownComponent)
}

/// Read, verify and decrypt a push sealed for the component; safe mode only
/// (a plaintext push is 403, like an app's that requires encryption).
async fn open_push(
    state: &AppState,
    req: &HttpRequest,
    component: &Component,
    payload: web::Payload,
) -> Result<Map<String, Value>, CallbackError> {
    let body = read_limited(payload, MAX_XML_BYTES, state.config.body_timeout).await?;
    let format = Format::of(req, &body)?;
    let outer = format.fields(&body)?;
    if param(req.query_string(), "encrypt_type").as_deref() != Some("aes") {
        return Err(CallbackError::EncryptionRequired);
    }
    let sealed = Sealed {
        token: component.token.expose(),
        key: &component.key,
        receive_id: component.app_id.as_str(),
    };
    sealed.open(req, &outer)
}

/// POST to the event URL: tickets and authorizations.
#[utoipa::path(post, path = "/component/{componentAppId}/events", tag = "providers", params(("componentAppId" = inline(crate::domain::AppId), Path), ("msg_signature" = String, Query, min_length = 1, max_length = 256), ("timestamp" = String, Query, min_length = 1, max_length = 256), ("nonce" = String, Query, min_length = 1, max_length = 256), ("encrypt_type" = String, Query, min_length = 1, max_length = 16)), request_body(content = super::schemas::CallbackEnvelope, content_type = "text/xml"), responses((status = 200, description = "success (stored durably; an authorization code is exchanged after the answer)"), (status = 400, description = "Malformed, or a field its InfoType needs is missing"), (status = 401, description = "Bad signature, a receiveid other than the component, or another component's AppId"), (status = 403, description = "Not encrypted"), (status = 404, description = "Unknown component"), (status = 413, description = "Body over 64 KiB"), (status = 503, description = "Store unavailable: WeChat retries")))]
#[tracing::instrument(name = "push", level = "debug", skip_all, fields(kind = "component_event", component = %path.as_str()))]
async fn events(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, CallbackError> {
    let started = Instant::now();
    let result = async {
        let component = component_of(&state, &path)?;
        let fields = open_push(&state, &req, &component, payload).await?;
        if field(&fields, "AppId")? != component.app_id.as_str() {
            return Err(CallbackError::ForeignProvider);
        }
        handle_push(&state, &component.provider(), &COMPONENT, fields).await
    }
    .await;
    log_outcome(
        &state,
        "component_event",
        &path,
        started,
        &result,
        accepted_label,
    );
    result.map(|_| success())
}

/// POST to the message URL: an authorized account's own push, delivered
/// to the account's subscriptions and the component's, `via` the component.
#[utoipa::path(post, path = "/component/{componentAppId}/messages/{appId}", tag = "providers", params(("componentAppId" = inline(crate::domain::AppId), Path), ("appId" = inline(crate::domain::AppId), Path), ("msg_signature" = String, Query, min_length = 1, max_length = 256), ("timestamp" = String, Query, min_length = 1, max_length = 256), ("nonce" = String, Query, min_length = 1, max_length = 256), ("encrypt_type" = String, Query, min_length = 1, max_length = 16)), request_body(content = String, content_type = "text/xml"), responses((status = 200, description = "success (stored durably)"), (status = 400, description = "Malformed"), (status = 401, description = "Bad signature, or a receiveid other than the component"), (status = 403, description = "Not encrypted"), (status = 404, description = "Unknown component"), (status = 413, description = "Body over 64 KiB"), (status = 503, description = "Store unavailable: WeChat retries")))]
#[tracing::instrument(name = "push", level = "debug", skip_all, fields(kind = "authorizer", component = %path.0))]
async fn messages(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    payload: web::Payload,
) -> Result<HttpResponse, CallbackError> {
    let started = Instant::now();
    let (component_id, account) = path.into_inner();
    let result = async {
        let component = component_of(&state, &component_id)?;
        let account =
            AppId::parse(&account).map_err(|e| CallbackError::BadRequest(e.to_string()))?;
        let fields = open_push(&state, &req, &component, payload).await?;
        let via = Some(component.app_id.as_str());
        store_push(&state, account.as_str(), "authorizer", via, &fields).await
    }
    .await;
    log_outcome(
        &state,
        "authorizer",
        &component_id,
        started,
        &result,
        accepted_label,
    );
    result.map(|_| success())
}
