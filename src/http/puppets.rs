//! Puppet registration (API.md §1): register, deregister, puppetWxkfInfo.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::body::read_limited;
use super::error::PuppetApiError;
use super::AppState;
use crate::domain::{CorpId, EndpointUrl, KfId, RegisterBody, Registration};
use crate::views::PuppetView;

const REGISTER_BODY_LIMIT: usize = 16 * 1024;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/register").post(register))
        .service(web::resource("/deregister").post(deregister))
        .service(web::resource("/puppetWxkfInfo/{kf_id}").get(info));
}

fn parse_json<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, PuppetApiError> {
    serde_json::from_slice(body).map_err(|_| {
        PuppetApiError::BadRequest("body is not a JSON object of the expected shape".into())
    })
}

/// The endpoint policy at registration: `ENDPOINT_ALLOW`, and no link-local,
/// metadata or unspecified address, also behind a name (400 naming the field).
pub(super) async fn check_endpoint(
    state: &AppState,
    endpoint: &EndpointUrl,
) -> Result<(), PuppetApiError> {
    state
        .endpoint_guard
        .check_registration(endpoint.url())
        .await
        .map_err(|refusal| PuppetApiError::BadRequest(format!("endpoint: {refusal}")))
}

/// One request from this client's bucket (register and deregister).
fn rate_limit(state: &AppState, req: &HttpRequest) -> Result<(), PuppetApiError> {
    let (Some(limit), Some(peer)) = (&state.register_limit, req.peer_addr()) else {
        return Ok(());
    };
    limit.check(peer.ip(), state.clock.now()).map_err(|wait| {
        tracing::warn!(client = %peer.ip(), "registration rate limit reached");
        PuppetApiError::RateLimited(wait)
    })
}

#[tracing::instrument(skip_all, fields(kf_id, corp_id))]
#[utoipa::path(post, path = "/puppetWxkfManager/register", tag = "puppets", request_body(content = crate::domain::RegisterBody, content_type = "application/json"), responses((status = 200, description = "{code: 0, message: success}"), (status = 400, description = "{code: 400, message} naming the field"), (status = 409, description = "The kfId is registered to another endpoint with other credentials, or the corp has MAX_KF_PER_CORP kfIds"), (status = 413, description = "Body over 16 KiB"), (status = 429, description = "Too many requests from this address (Retry-After)"), (status = 503, description = "Store unavailable")))]
async fn register(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, PuppetApiError> {
    rate_limit(&state, &req)?;
    let body = read_limited(payload, REGISTER_BODY_LIMIT, state.config.body_timeout).await?;
    let reg = Registration::try_from(parse_json::<RegisterBody>(&body)?)?;
    let span = tracing::Span::current();
    span.record("kf_id", reg.kf_id.as_str());
    span.record("corp_id", reg.corp_id.as_str());

    check_endpoint(&state, &reg.endpoint).await?;
    let existing = state.store.get_puppet(&reg.kf_id).await?;
    if let Some(existing) = &existing {
        let current = &existing.registration;
        let moving = current.endpoint != reg.endpoint || current.corp_id != reg.corp_id;
        if moving && !current.credentials.same_as(&reg.credentials) {
            tracing::warn!("refused: re-registration to another endpoint with other credentials");
            return Err(PuppetApiError::Conflict(
                "kfId is registered to another endpoint; moving it requires the credentials it was registered with",
            ));
        }
    }
    let joins_corp = existing.is_none_or(|p| p.registration.corp_id != reg.corp_id);
    let cap = state.config.registration.max_kf_per_corp;
    if joins_corp && state.store.count_puppets(&reg.corp_id).await? >= cap {
        tracing::warn!(
            cap,
            "refused: the corp has as many kfIds as MAX_KF_PER_CORP allows"
        );
        return Err(PuppetApiError::Limit(format!(
            "corpId: this corp already has {cap} registered kfIds (MAX_KF_PER_CORP); deregistered ones count until an operator deletes them"
        )));
    }
    let now = state.clock.now();
    state.store.save_registration(&reg, now).await?;
    state
        .credentials
        .reload_corp(state.store.as_ref(), &reg.corp_id)
        .await?;
    state
        .dispatcher
        .registration_changed(reg.kf_id.as_str(), true);
    let woken = state.store.wake_kf(&reg.corp_id, &reg.kf_id, now).await?;
    state.dispatcher.wake();
    tracing::info!(
        endpoint = reg.endpoint.as_str(),
        waiting = woken,
        "puppet registered"
    );
    Ok(super::ok())
}

/// Puppet deregistration; other fields (kfName) are ignored.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct DeregisterBody {
    #[schema(value_type = KfId, inline, required = true)]
    kf_id: Option<String>,
    #[schema(value_type = CorpId, inline, required = true)]
    corp_id: Option<String>,
}

#[tracing::instrument(skip_all, fields(kf_id, corp_id))]
#[utoipa::path(post, path = "/puppetWxkfManager/deregister", tag = "puppets", request_body(content = DeregisterBody, content_type = "application/json"), responses((status = 200, description = "{code: 0, message: success}"), (status = 400, description = "Invalid body, naming the field"), (status = 404, description = "Unknown kfId"), (status = 408, description = "Body not received in time"), (status = 413, description = "Body over 16 KiB"), (status = 503, description = "Store unavailable"), (status = 429, description = "Too many requests from this address (Retry-After)")))]
async fn deregister(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, PuppetApiError> {
    rate_limit(&state, &req)?;
    let body = read_limited(payload, REGISTER_BODY_LIMIT, state.config.body_timeout).await?;
    let parsed: DeregisterBody = parse_json(&body)?;
    let kf_id = KfId::parse(parsed.kf_id.as_deref().unwrap_or(""))?;
    let corp_id = CorpId::parse(parsed.corp_id.as_deref().unwrap_or(""))?;
    let span = tracing::Span::current();
    span.record("kf_id", kf_id.as_str());
    span.record("corp_id", corp_id.as_str());
    if !state
        .store
        .set_offline(&kf_id, &corp_id, state.clock.now())
        .await?
    {
        return Err(PuppetApiError::NotFound(
            "kfId is not registered under this corpId",
        ));
    }
    state.dispatcher.registration_changed(kf_id.as_str(), false);
    tracing::info!("puppet deregistered");
    Ok(super::ok())
}

/// Path parameters are read by name: under `/s/{secret}/...` there are two.
#[utoipa::path(get, path = "/puppetWxkfManager/puppetWxkfInfo/{kfId}", tag = "puppets", params(("kfId" = inline(crate::domain::KfId), Path, description = "The customer-service account")), responses((status = 200, description = "The registration without any secret"), (status = 400, description = "Invalid kfId"), (status = 404, description = "Unknown kfId"), (status = 503, description = "Store unavailable")))]
async fn info(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, PuppetApiError> {
    let kf_id = KfId::parse(req.match_info().query("kf_id"))?;
    let puppet = state
        .store
        .get_puppet(&kf_id)
        .await?
        .ok_or(PuppetApiError::NotFound("kfId is not registered"))?;
    Ok(HttpResponse::Ok().json(PuppetView::from(&puppet)))
}
