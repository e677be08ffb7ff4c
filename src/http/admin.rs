//! The operator API under `/admin/api/`: puppets, corps, deliveries (and,
//! in `admin_channels.rs`, apps and subscriptions).
//!
//! Authorization is the scope's middleware (`admin_auth.rs`).

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::error::PuppetApiError;
use super::query::param;
use super::AppState;
use crate::domain::{CorpId, CredentialSet, DeliveryId, EndpointUrl, KfId};
use crate::store::{DeliveryFilter, DeliveryStatus};
use crate::views::PuppetView;

const MAX_PAGE: usize = 500;

/// One resource per path, so that a method it does not serve is 405.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/overview").get(super::overview::overview))
        .service(web::resource("/puppets").get(list_puppets))
        .service(
            web::resource("/puppets/{kf_id}")
                .get(show_puppet)
                .delete(delete_puppet),
        )
        .service(web::resource("/puppets/{kf_id}/endpoint").put(move_puppet))
        .service(web::resource("/corps").get(list_corps))
        .service(
            web::resource("/corps/{corp_id}/credentials")
                .put(rotate_credentials)
                .delete(super::admin_channels::remove_credentials),
        )
        .service(web::resource("/deliveries").get(list_deliveries))
        .service(web::resource("/deliveries/redrive").post(redrive_kf))
        .service(web::resource("/deliveries/{id}/redrive").post(redrive_one))
        .service(web::resource("/deliveries/{id}").delete(delete_one))
        .configure(super::admin_channels::routes)
        .configure(super::admin_providers::routes)
        .configure(super::admin_components::routes);
}

/// `limit` (50 by default, clamped to 1..=`MAX_PAGE`) and `offset`: whole
/// numbers up to 2^63 - 1 (what the document's int64 and the stores allow).
fn page(limit: Option<&str>, offset: Option<&str>) -> Result<(usize, usize), PuppetApiError> {
    fn number(field: &str, v: &str) -> Result<usize, PuppetApiError> {
        match v.parse::<i64>() {
            Ok(n) if n >= 0 && !v.starts_with('+') => Ok(n as usize),
            _ => Err(PuppetApiError::BadRequest(format!(
                "{field}: a whole number from 0 to 9223372036854775807"
            ))),
        }
    }
    let limit = limit.map(|v| number("limit", v)).transpose()?.unwrap_or(50);
    let offset = offset
        .map(|v| number("offset", v))
        .transpose()?
        .unwrap_or(0);
    Ok((limit.clamp(1, MAX_PAGE), offset))
}

/// An id filter: empty means none; otherwise it must be a valid id.
fn id_filter<T, E>(
    value: Option<String>,
    parse: impl Fn(&str) -> Result<T, E>,
) -> Result<Option<T>, PuppetApiError>
where
    PuppetApiError: From<E>,
{
    Ok(value
        .filter(|v| !v.is_empty())
        .map(|v| parse(&v))
        .transpose()?)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListQuery {
    status: Option<String>,
    kf_id: Option<String>,
    corp_id: Option<String>,
    limit: Option<String>,
    offset: Option<String>,
}

#[utoipa::path(get, path = "/admin/api/deliveries", tag = "admin", params(("status" = Option<DeliveryStatus>, Query, nullable = false), ("kfId" = inline(Option<crate::domain::IdFilter>), Query, nullable = false, description = "Empty: no filter"), ("corpId" = inline(Option<crate::domain::IdFilter>), Query, nullable = false, description = "Empty: no filter"), ("limit" = Option<u64>, Query, nullable = false, description = "Page size, 50 by default; clamped to 1..=500"), ("offset" = Option<u64>, Query, nullable = false, description = "Beyond the end: an empty page")), responses((status = 200, description = "{items, limit, offset}, newest first"), (status = 400, description = "Invalid parameter or body, naming the field"), (status = 401, description = "No bearer token"), (status = 403, description = "Wrong token, or ADMIN_TOKEN not set"), (status = 503, description = "Store unavailable")))]
async fn list_deliveries(
    state: web::Data<AppState>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, PuppetApiError> {
    let q = query.into_inner();
    let status = match q.status.as_deref() {
        None => None,
        Some(s) => Some(DeliveryStatus::parse(s).ok_or_else(|| {
            PuppetApiError::BadRequest(
                "status: one of pending, parked, delivered, dead, superseded, unroutable".into(),
            )
        })?),
    };
    let (limit, offset) = page(q.limit.as_deref(), q.offset.as_deref())?;
    let filter = DeliveryFilter {
        status,
        corp_id: id_filter(q.corp_id, CorpId::parse)?.map(|c| c.as_str().to_owned()),
        kf_id: id_filter(q.kf_id, KfId::parse)?.map(|k| k.as_str().to_owned()),
        limit,
        offset,
    };
    let items = state.store.list_deliveries(&filter).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "items": items, "limit": filter.limit, "offset": filter.offset,
    })))
}

#[utoipa::path(post, path = "/admin/api/deliveries/{id}/redrive", tag = "admin", params(("id" = String, Path)), responses((status = 200, description = "Re-driven"), (status = 404, description = "No dead or parked delivery with this id"), (status = 400, description = "Invalid parameter or body, naming the field"), (status = 401, description = "No bearer token"), (status = 403, description = "Wrong token, or ADMIN_TOKEN not set"), (status = 503, description = "Store unavailable")))]
async fn redrive_one(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, PuppetApiError> {
    let id = DeliveryId::from(id.into_inner());
    if !state.store.redrive(&id, state.clock.now()).await? {
        return Err(PuppetApiError::NotFound(
            "no dead or parked delivery with this id",
        ));
    }
    state.dispatcher.wake();
    tracing::info!(delivery_id = %id, "re-driven by an operator");
    Ok(
        HttpResponse::Ok()
            .json(serde_json::json!({"code": 0, "message": "success", "redriven": 1})),
    )
}

#[utoipa::path(post, path = "/admin/api/deliveries/redrive", tag = "admin", params(("kfId" = inline(crate::domain::KfId), Query)), responses((status = 200, description = "{redriven}: dead letters of the kfId sent again"), (status = 400, description = "Invalid parameter or body, naming the field"), (status = 401, description = "No bearer token"), (status = 403, description = "Wrong token, or ADMIN_TOKEN not set"), (status = 503, description = "Store unavailable")))]
async fn redrive_kf(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, PuppetApiError> {
    let kf = KfId::parse(&param(req.query_string(), "kfId").unwrap_or_default())?;
    let n = state
        .store
        .redrive_dead_of_kf(&kf, state.clock.now())
        .await?;
    state.dispatcher.wake();
    tracing::info!(kf_id = %kf, redriven = n, "dead letters re-driven by an operator");
    Ok(
        HttpResponse::Ok()
            .json(serde_json::json!({"code": 0, "message": "success", "redriven": n})),
    )
}

#[utoipa::path(delete, path = "/admin/api/deliveries/{id}", tag = "admin", params(("id" = String, Path)), responses((status = 200, description = "Deleted"), (status = 404, description = "Unknown id"), (status = 400, description = "Invalid parameter or body, naming the field"), (status = 401, description = "No bearer token"), (status = 403, description = "Wrong token, or ADMIN_TOKEN not set"), (status = 503, description = "Store unavailable")))]
async fn delete_one(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, PuppetApiError> {
    let id = DeliveryId::from(id.into_inner());
    if !state.store.delete_delivery(&id).await? {
        return Err(PuppetApiError::NotFound("no delivery with this id"));
    }
    Ok(super::ok())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PuppetQuery {
    corp_id: Option<String>,
    online: Option<bool>,
    limit: Option<String>,
    offset: Option<String>,
}

#[utoipa::path(get, path = "/admin/api/puppets", tag = "admin", params(("corpId" = inline(Option<crate::domain::IdFilter>), Query, nullable = false, description = "Empty: no filter"), ("online" = Option<bool>, Query, nullable = false), ("limit" = Option<u64>, Query, nullable = false, description = "Page size, 50 by default; clamped to 1..=500"), ("offset" = Option<u64>, Query, nullable = false, description = "Beyond the end: an empty page")), responses((status = 200, description = "{items, limit, offset}"), (status = 400, description = "Invalid parameter or body, naming the field"), (status = 401, description = "No bearer token"), (status = 403, description = "Wrong token, or ADMIN_TOKEN not set"), (status = 503, description = "Store unavailable")))]
async fn list_puppets(
    state: web::Data<AppState>,
    query: web::Query<PuppetQuery>,
) -> Result<HttpResponse, PuppetApiError> {
    let q = query.into_inner();
    let corp = id_filter(q.corp_id, CorpId::parse)?;
    let (limit, offset) = page(q.limit.as_deref(), q.offset.as_deref())?;
    let puppets = state
        .store
        .list_puppets(corp.as_ref(), q.online, limit, offset)
        .await?;
    let items: Vec<PuppetView> = puppets.iter().map(PuppetView::from).collect();
    Ok(HttpResponse::Ok()
        .json(serde_json::json!({"items": items, "limit": limit, "offset": offset})))
}

#[utoipa::path(get, path = "/admin/api/puppets/{kfId}", tag = "admin", params(("kfId" = inline(crate::domain::KfId), Path)), responses((status = 200, description = "{puppet, deliveries, lastDeliveredDate}"), (status = 404, description = "Unknown kfId"), (status = 400, description = "Invalid parameter or body, naming the field"), (status = 401, description = "No bearer token"), (status = 403, description = "Wrong token, or ADMIN_TOKEN not set"), (status = 503, description = "Store unavailable")))]
async fn show_puppet(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, PuppetApiError> {
    let kf = KfId::parse(&path)?;
    let puppet = state
        .store
        .get_puppet(&kf)
        .await?
        .ok_or(PuppetApiError::NotFound("kfId is not registered"))?;
    let summary = state.store.kf_summary(&kf).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "puppet": PuppetView::from(&puppet),
        "deliveries": summary,
        "lastDeliveredDate": summary.last_delivered_at.map(crate::clock::UnixMillis::iso8601),
    })))
}

#[utoipa::path(delete, path = "/admin/api/puppets/{kfId}", tag = "admin", params(("kfId" = inline(crate::domain::KfId), Path)), responses((status = 200, description = "Deleted"), (status = 404, description = "Unknown kfId"), (status = 400, description = "Invalid parameter or body, naming the field"), (status = 401, description = "No bearer token"), (status = 403, description = "Wrong token, or ADMIN_TOKEN not set"), (status = 503, description = "Store unavailable")))]
async fn delete_puppet(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, PuppetApiError> {
    let kf = KfId::parse(&path)?;
    let Some(puppet) = state.store.get_puppet(&kf).await? else {
        return Err(PuppetApiError::NotFound("kfId is not registered"));
    };
    state.store.delete_puppet(&kf).await?;
    state.dispatcher.registration_changed(kf.as_str(), false);
    state
        .credentials
        .reload_corp(state.store.as_ref(), &puppet.registration.corp_id)
        .await?;
    tracing::info!(kf_id = %kf, "puppet deleted by an operator");
    Ok(super::ok())
}

/// An operator moves a kfId to another endpoint.
#[derive(Deserialize, utoipa::ToSchema)]
pub(super) struct MoveBody {
    #[schema(value_type = EndpointUrl, inline, required = true)]
    endpoint: Option<String>,
}

/// Operators may move a kfId to another endpoint without its credentials;
/// it is online there, and what waited parked for it is delivered there.
#[utoipa::path(put, path = "/admin/api/puppets/{kfId}/endpoint", tag = "admin", params(("kfId" = inline(crate::domain::KfId), Path)), request_body(content = MoveBody, content_type = "application/json"), responses((status = 413, description = "Body over 16 KiB"), (status = 200, description = "Moved"), (status = 404, description = "Unknown kfId"), (status = 400, description = "Invalid parameter or body, naming the field"), (status = 401, description = "No bearer token"), (status = 403, description = "Wrong token, or ADMIN_TOKEN not set"), (status = 503, description = "Store unavailable")))]
async fn move_puppet(
    state: web::Data<AppState>,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, PuppetApiError> {
    let kf = KfId::parse(&path)?;
    let body: MoveBody = state.json_body(payload).await?;
    let endpoint = EndpointUrl::parse(body.endpoint.as_deref().unwrap_or(""))?;
    super::puppets::check_endpoint(&state, &endpoint).await?;
    let moved =
        crate::delivery::move_puppet(state.store.as_ref(), &kf, &endpoint, state.clock.now())
            .await?;
    let Some(woken) = moved else {
        return Err(PuppetApiError::NotFound("kfId is not registered"));
    };
    state.dispatcher.registration_changed(kf.as_str(), true);
    state.dispatcher.wake();
    tracing::info!(kf_id = %kf, endpoint = endpoint.as_str(), waiting = woken, "puppet moved by an operator");
    Ok(super::ok())
}

#[utoipa::path(get, path = "/admin/api/corps", tag = "admin", responses((status = 200, description = "{items: [{corpId, credentialSets, puppets, online}]}"), (status = 400, description = "Invalid parameter or body, naming the field"), (status = 401, description = "No bearer token"), (status = 403, description = "Wrong token, or ADMIN_TOKEN not set"), (status = 503, description = "Store unavailable")))]
async fn list_corps(state: web::Data<AppState>) -> Result<HttpResponse, PuppetApiError> {
    let items = state.store.list_corps().await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({"items": items})))
}

/// Callback credentials for a corp: added, or rotated from `previousToken`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct RotateBody {
    #[schema(value_type = String, required = true, pattern = r"^[^\u0000-\u001f\u007f-\u009f]{1,128}$")]
    token: Option<String>,
    #[serde(rename = "encodingAESKey")]
    #[schema(value_type = String, required = true, pattern = r"^[A-Za-z0-9]{43}$")]
    encoding_aes_key: Option<String>,
    /// Rotate only the puppets that use this token (one app of the corp).
    #[schema(min_length = 1, max_length = 128)]
    previous_token: Option<String>,
}

#[utoipa::path(put, path = "/admin/api/corps/{corpId}/credentials", tag = "admin", params(("corpId" = inline(crate::domain::CorpId), Path)), request_body(content = RotateBody, content_type = "application/json"), responses((status = 413, description = "Body over 16 KiB"), (status = 200, description = "{updated}"), (status = 404, description = "No puppet uses these credentials"), (status = 400, description = "Invalid parameter or body, naming the field"), (status = 401, description = "No bearer token"), (status = 403, description = "Wrong token, or ADMIN_TOKEN not set"), (status = 503, description = "Store unavailable")))]
async fn rotate_credentials(
    state: web::Data<AppState>,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, PuppetApiError> {
    let corp = CorpId::parse(&path)?;
    let body: RotateBody = state.json_body(payload).await?;
    let set = CredentialSet::parse(body.token.as_deref(), body.encoding_aes_key.as_deref())?;
    if body.previous_token.is_none() {
        return super::admin_channels::add_credentials(&state, &corp, &set).await;
    }
    let n = state
        .store
        .rotate_credentials(
            &corp,
            &set,
            body.previous_token.as_deref(),
            state.clock.now(),
        )
        .await?;
    if n == 0 {
        return Err(PuppetApiError::NotFound(
            "no puppet of this corp uses these credentials",
        ));
    }
    state
        .credentials
        .reload_corp(state.store.as_ref(), &corp)
        .await?;
    tracing::info!(corp_id = %corp, updated = n, "credentials rotated by an operator");
    Ok(HttpResponse::Ok().json(serde_json::json!({"code": 0, "message": "success", "updated": n})))
}

/// The dashboard: one static page (HTML, CSS, a little JavaScript) embedded
/// in the binary; it calls the admin API with the token the operator types.
#[utoipa::path(get, path = "/admin/", tag = "admin", responses((status = 200, description = "The dashboard page"), (status = 403, description = "ADMIN_TOKEN is not set: the page says so")))]
pub async fn dashboard(state: web::Data<AppState>) -> HttpResponse {
    if state.config.admin_token.is_none() {
        return HttpResponse::Forbidden()
            .content_type("text/html; charset=utf-8")
            .body(format!(
                "<!doctype html><meta charset=\"utf-8\"><title>wxkf-manager</title>\
                 <h1>wxkf-manager</h1><p id=\"off\">{}.</p>",
                super::admin_auth::ADMIN_OFF
            ));
    }
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((
            "content-security-policy",
            "default-src 'self'; script-src 'unsafe-inline' 'self'; style-src 'unsafe-inline' 'self'",
        ))
        .body(include_str!("static/dashboard.html"))
}

/// The chart library the dashboard embeds: uPlot (MIT), bundled into the
/// binary from its npm package (`scripts/vendor/uplot`).
pub(super) async fn uplot_js() -> HttpResponse {
    vendored(
        "text/javascript; charset=utf-8",
        include_str!("static/vendor/uplot/uPlot.iife.min.js"),
    )
}

pub(super) async fn uplot_css() -> HttpResponse {
    vendored(
        "text/css; charset=utf-8",
        include_str!("static/vendor/uplot/uPlot.min.css"),
    )
}

fn vendored(content_type: &'static str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header(("cache-control", "public, max-age=86400"))
        .body(body)
}
