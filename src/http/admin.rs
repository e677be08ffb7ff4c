//! The operator API under `/admin/api/` (deliveries: list, re-drive, delete).
//!
//! Bearer `ADMIN_TOKEN`, compared in constant time. Without `ADMIN_TOKEN`
//! only loopback clients are served; others get 403.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use subtle::ConstantTimeEq;

use super::error::PuppetApiError;
use super::query::param;
use super::AppState;
use crate::domain::KfId;
use crate::store::{EventFilter, EventStatus};

const MAX_PAGE: usize = 500;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/deliveries", web::get().to(list_deliveries))
        .route("/deliveries/redrive", web::post().to(redrive_kf))
        .route("/deliveries/{id}/redrive", web::post().to(redrive_one))
        .route("/deliveries/{id}", web::delete().to(delete_one));
}

fn authorize(req: &HttpRequest, state: &AppState) -> Result<(), PuppetApiError> {
    match &state.config.admin_token {
        Some(expected) => {
            let presented = req
                .headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .ok_or(PuppetApiError::Unauthorized)?;
            if bool::from(presented.as_bytes().ct_eq(expected.expose().as_bytes())) {
                Ok(())
            } else {
                Err(PuppetApiError::Forbidden("wrong admin token"))
            }
        }
        None if req.peer_addr().is_some_and(|a| a.ip().is_loopback()) => Ok(()),
        None => Err(PuppetApiError::Forbidden(
            "ADMIN_TOKEN is not set: the admin API answers loopback clients only",
        )),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListQuery {
    status: Option<String>,
    kf_id: Option<String>,
    corp_id: Option<String>,
    limit: Option<usize>,
    offset: Option<usize>,
}

async fn list_deliveries(
    state: web::Data<AppState>,
    req: HttpRequest,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, PuppetApiError> {
    authorize(&req, &state)?;
    let q = query.into_inner();
    let status = match q.status.as_deref() {
        None | Some("") => None,
        Some(s) => Some(EventStatus::parse(s).ok_or_else(|| {
            PuppetApiError::BadRequest(
                "status: one of pending, parked, delivered, dead, superseded, unroutable".into(),
            )
        })?),
    };
    let filter = EventFilter {
        status,
        corp_id: q.corp_id.filter(|s| !s.is_empty()),
        kf_id: q.kf_id.filter(|s| !s.is_empty()),
        limit: q.limit.unwrap_or(50).clamp(1, MAX_PAGE),
        offset: q.offset.unwrap_or(0),
    };
    let items = state.store.list_events(&filter).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "items": items, "limit": filter.limit, "offset": filter.offset,
    })))
}

async fn redrive_one(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, PuppetApiError> {
    authorize(&req, &state)?;
    if !state.store.redrive(&id, state.clock.now_ms()).await? {
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

async fn redrive_kf(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, PuppetApiError> {
    authorize(&req, &state)?;
    let kf = KfId::parse(&param(req.query_string(), "kfId").unwrap_or_default())?;
    let n = state
        .store
        .redrive_dead_of_kf(&kf, state.clock.now_ms())
        .await?;
    state.dispatcher.wake();
    tracing::info!(kf_id = %kf, redriven = n, "dead letters re-driven by an operator");
    Ok(
        HttpResponse::Ok()
            .json(serde_json::json!({"code": 0, "message": "success", "redriven": n})),
    )
}

async fn delete_one(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, PuppetApiError> {
    authorize(&req, &state)?;
    if !state.store.delete_event(&id).await? {
        return Err(PuppetApiError::NotFound("no delivery with this id"));
    }
    Ok(HttpResponse::Ok().json(serde_json::json!({"code": 0, "message": "success"})))
}
