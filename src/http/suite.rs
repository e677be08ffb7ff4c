//! A WeCom suite's push URLs (API.md §7.1): the command URL (tickets,
//! authorizations) and the data URL (its customer corps' own callbacks).
//! Both are verified and decrypted with the suite's one Token and
//! EncodingAESKey, stored durably and answered at once: the manager never
//! calls WeCom before answering (`create_auth` must be answered in 1 s).
//!
//! receiveids: a URL check on either URL is sealed for the provider's
//! corpId; a command push for the suite id; a data push for the customer
//! corp, which must be the URL's when it names one (`$CORPID$`).

use std::sync::Arc;
use std::time::Instant;

use actix_web::{web, HttpRequest, HttpResponse};

use super::body::read_limited;
use super::callback::{accept, accepted_label, log_outcome, Accepted, SignedQuery};
use super::error::CallbackError;
use super::provider_push::{field, handle_push, success, SUITE};
use super::query::param;
use super::AppState;
use crate::domain::{CorpId, Suite};
use crate::wecom::{self, MAX_XML_BYTES};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/suite/{suite_id}/command")
            .get(verify_url)
            .post(command),
    )
    .service(
        web::resource("/suite/{suite_id}/data")
            .get(verify_data_url)
            .post(data),
    )
    .service(
        web::resource("/suite/{suite_id}/data/{corp_id}")
            .get(verify_url_of_corp)
            .post(data_of_corp),
    );
}

fn suite_of(state: &AppState, raw: &str) -> Result<Arc<Suite>, CallbackError> {
    state
        .directory
        .get()
        .suite(raw)
        .cloned()
        .ok_or(CallbackError::UnknownSuite)
}

/// The suite's Token signed `data` (`msg_signature`).
fn verify(suite: &Suite, query: &SignedQuery, data: &str) -> Result<(), CallbackError> {
    query
        .signer(std::slice::from_ref(&suite.credentials()), data)
        .map(|_| ())
}

/// GET on the command URL (and, below, the data URLs): the decrypted
/// `echostr`, sealed for the provider's corp.
#[utoipa::path(get, path = "/suite/{suiteId}/command", tag = "providers", params(("suiteId" = inline(crate::domain::SuiteId), Path), ("msg_signature" = String, Query, min_length = 1, max_length = 256), ("timestamp" = String, Query, min_length = 1, max_length = 256), ("nonce" = String, Query, min_length = 1, max_length = 256), ("echostr" = String, Query, min_length = 1)), responses((status = 200, description = "The decrypted echostr, text/plain"), (status = 400, description = "Malformed"), (status = 401, description = "Bad signature or receiveid"), (status = 404, description = "Unknown suite")))]
async fn verify_url(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, CallbackError> {
    check_url(&state, &req, &path)
}

#[utoipa::path(get, path = "/suite/{suiteId}/data", tag = "providers", params(("suiteId" = inline(crate::domain::SuiteId), Path), ("msg_signature" = String, Query, min_length = 1, max_length = 256), ("timestamp" = String, Query, min_length = 1, max_length = 256), ("nonce" = String, Query, min_length = 1, max_length = 256), ("echostr" = String, Query, min_length = 1)), responses((status = 200, description = "The decrypted echostr, text/plain"), (status = 400, description = "Malformed"), (status = 401, description = "Bad signature or receiveid"), (status = 404, description = "Unknown suite")))]
async fn verify_data_url(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, CallbackError> {
    check_url(&state, &req, &path)
}

#[utoipa::path(get, path = "/suite/{suiteId}/data/{corpId}", tag = "providers", params(("suiteId" = inline(crate::domain::SuiteId), Path), ("corpId" = inline(crate::domain::CorpId), Path), ("msg_signature" = String, Query, min_length = 1, max_length = 256), ("timestamp" = String, Query, min_length = 1, max_length = 256), ("nonce" = String, Query, min_length = 1, max_length = 256), ("echostr" = String, Query, min_length = 1)), responses((status = 200, description = "The decrypted echostr, text/plain"), (status = 400, description = "Malformed"), (status = 401, description = "Bad signature or receiveid"), (status = 404, description = "Unknown suite")))]
async fn verify_url_of_corp(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, CallbackError> {
    check_url(&state, &req, &path.0)
}

fn check_url(
    state: &AppState,
    req: &HttpRequest,
    suite_id: &str,
) -> Result<HttpResponse, CallbackError> {
    let suite = suite_of(state, suite_id)?;
    let query = SignedQuery::from_request(req)?;
    let echostr = param(req.query_string(), "echostr")
        .filter(|v| !v.is_empty())
        .ok_or_else(|| CallbackError::BadRequest("query parameter echostr missing".into()))?;
    verify(&suite, &query, &echostr)?;
    let plain = wecom::decrypt(&suite.key, &echostr, suite.provider_corp_id.as_str())?;
    Ok(HttpResponse::Ok()
        .content_type("text/plain")
        .body(plain.message))
}

/// The envelope of a POST, verified and decrypted; the receiveid inside is
/// returned for the caller to check.
async fn open_push(
    state: &AppState,
    req: &HttpRequest,
    suite: &Suite,
    payload: web::Payload,
) -> Result<(SignedQuery, web::Bytes, wecom::Decrypted, Instant), CallbackError> {
    let query = SignedQuery::from_request(req)?;
    let body = read_limited(payload, MAX_XML_BYTES, state.config.body_timeout).await?;
    let envelope = wecom::parse_envelope(&body)?;
    let crypto_started = Instant::now();
    verify(suite, &query, &envelope.encrypt)?;
    // The receiveid is checked by the caller, which knows whose it must be.
    let plain = wecom::decrypt(&suite.key, &envelope.encrypt, "")?;
    Ok((query, body, plain, crypto_started))
}

/// POST to the command URL: tickets and authorizations.
#[utoipa::path(post, path = "/suite/{suiteId}/command", tag = "providers", params(("suiteId" = inline(crate::domain::SuiteId), Path), ("msg_signature" = String, Query, min_length = 1, max_length = 256), ("timestamp" = String, Query, min_length = 1, max_length = 256), ("nonce" = String, Query, min_length = 1, max_length = 256)), request_body(content = super::schemas::CallbackEnvelope, content_type = "text/xml"), responses((status = 200, description = "success (stored durably; an authorization code is exchanged after the answer)"), (status = 400, description = "Malformed, or a field its InfoType needs is missing"), (status = 401, description = "Bad signature, a receiveid other than the suite, or another suite's SuiteId"), (status = 404, description = "Unknown suite"), (status = 413, description = "Body over 64 KiB"), (status = 503, description = "Store unavailable: WeCom retries")))]
#[tracing::instrument(name = "push", level = "debug", skip_all, fields(kind = "suite_command", suite_id = %path.as_str()))]
async fn command(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, CallbackError> {
    let started = Instant::now();
    let result = async {
        let suite = suite_of(&state, &path)?;
        let (_, _, plain, _) = open_push(&state, &req, &suite, payload).await?;
        if plain.receive_id != suite.suite_id.as_str().as_bytes() {
            return Err(CallbackError::WrongReceiveId);
        }
        let fields = wecom::xml_message(&plain.message)?;
        if field(&fields, "SuiteId")? != suite.suite_id.as_str() {
            return Err(CallbackError::ForeignProvider);
        }
        handle_push(&state, &suite.provider(), &SUITE, fields).await
    }
    .await;
    log_outcome(
        &state,
        "suite_command",
        &path,
        started,
        &result,
        accepted_label,
    );
    result.map(|_| success())
}

/// POST to the data URL: a customer corp's callback, as if it had come to
/// `/callback/{corpId}`.
#[utoipa::path(post, path = "/suite/{suiteId}/data", tag = "providers", params(("suiteId" = inline(crate::domain::SuiteId), Path), ("msg_signature" = String, Query, min_length = 1, max_length = 256), ("timestamp" = String, Query, min_length = 1, max_length = 256), ("nonce" = String, Query, min_length = 1, max_length = 256)), request_body(content = super::schemas::CallbackEnvelope, content_type = "text/xml"), responses((status = 200, description = "success (stored durably)"), (status = 400, description = "Malformed"), (status = 401, description = "Bad signature or receiveid"), (status = 404, description = "Unknown suite"), (status = 413, description = "Body over 64 KiB"), (status = 503, description = "Store unavailable: WeCom retries")))]
#[tracing::instrument(name = "callback", level = "debug", skip_all, fields(kind = "suite_data", suite_id = %path.as_str(), kf_id))]
async fn data(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, CallbackError> {
    data_push(state, req, path.into_inner(), None, payload).await
}

#[utoipa::path(post, path = "/suite/{suiteId}/data/{corpId}", tag = "providers", params(("suiteId" = inline(crate::domain::SuiteId), Path), ("corpId" = inline(crate::domain::CorpId), Path), ("msg_signature" = String, Query, min_length = 1, max_length = 256), ("timestamp" = String, Query, min_length = 1, max_length = 256), ("nonce" = String, Query, min_length = 1, max_length = 256)), request_body(content = super::schemas::CallbackEnvelope, content_type = "text/xml"), responses((status = 200, description = "success (stored durably)"), (status = 400, description = "Malformed"), (status = 401, description = "Bad signature, or a receiveid other than the URL's corp"), (status = 404, description = "Unknown suite"), (status = 413, description = "Body over 64 KiB"), (status = 503, description = "Store unavailable: WeCom retries")))]
#[tracing::instrument(name = "callback", level = "debug", skip_all, fields(kind = "suite_data", suite_id = %path.0, kf_id))]
async fn data_of_corp(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    payload: web::Payload,
) -> Result<HttpResponse, CallbackError> {
    let (suite_id, corp) = path.into_inner();
    data_push(state, req, suite_id, Some(corp), payload).await
}

async fn data_push(
    state: web::Data<AppState>,
    req: HttpRequest,
    suite_id: String,
    url_corp: Option<String>,
    payload: web::Payload,
) -> Result<HttpResponse, CallbackError> {
    let started = Instant::now();
    let result = async {
        let suite = suite_of(&state, &suite_id)?;
        let url_corp = url_corp
            .map(|c| CorpId::parse(&c).map_err(|e| CallbackError::BadRequest(e.to_string())))
            .transpose()?;
        let (query, body, plain, crypto_started) = open_push(&state, &req, &suite, payload).await?;
        let corp = std::str::from_utf8(&plain.receive_id)
            .ok()
            .and_then(|c| CorpId::parse(c).ok())
            .ok_or(CallbackError::WrongReceiveId)?;
        if url_corp.as_ref().is_some_and(|u| *u != corp) {
            return Err(CallbackError::WrongReceiveId);
        }
        let accepted = Accepted {
            corp: &corp,
            via: Some(suite.suite_id.as_str()),
            body: &body,
            query: &query,
            crypto_started,
        };
        accept(&state, &state.directory.get(), accepted, &plain.message).await
    }
    .await;
    log_outcome(
        &state,
        "suite_data",
        &suite_id,
        started,
        &result,
        accepted_label,
    );
    result.map(|_| success())
}
