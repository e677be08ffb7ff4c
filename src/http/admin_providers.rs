//! The operator API for WeCom suites (API.md §7.1): suites, their
//! customer corps and their keys; and what components' share with them. A suite is accepted only with
//! `SECRETS_KEY` set: its grants are API access to its customers and are
//! never kept in clear.

use actix_web::{web, HttpResponse};
use serde_json::json;

use super::admin_channels::KeyBody;
use super::error::PuppetApiError;
use super::AppState;
use crate::domain::{AppKey, Provider, Suite, SuiteBody, SuiteId};
use crate::store::{Channels, Providers};
use crate::views::{AppKeyView, GrantView, SuiteView};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/suites").get(list_suites))
        .service(
            web::resource("/suites/{suite_id}")
                .put(put_suite)
                .get(show_suite)
                .delete(delete_suite),
        )
        .service(web::resource("/suites/{suite_id}/corps").get(list_corps))
        .service(
            web::resource("/suites/{suite_id}/keys")
                .post(issue_key)
                .get(list_keys),
        )
        .service(web::resource("/suites/{suite_id}/keys/{id}").delete(revoke_key));
}

/// A suite as operators see it: with its newest ticket's arrival and how
/// many corps hold a grant.
pub(crate) async fn suite_view(
    store: &dyn crate::store::Store,
    suite: &Suite,
) -> Result<SuiteView, crate::store::StoreError> {
    let provider = suite.provider();
    let ticket = store.ticket(&provider).await?;
    let corps = crate::providers::customers(store, &provider).await?;
    Ok(SuiteView::new(suite, ticket.map(|t| t.received_at), corps))
}

async fn known_suite(state: &AppState, raw: &str) -> Result<Suite, PuppetApiError> {
    let suite_id = SuiteId::parse(raw)?;
    state
        .store
        .get_suite(&suite_id)
        .await?
        .ok_or(PuppetApiError::NotFound("unknown suite"))
}

pub(super) async fn changed(state: &AppState) -> Result<(), PuppetApiError> {
    state.directory.refresh(state.store.as_ref()).await?;
    Ok(())
}

#[utoipa::path(put, path = "/admin/api/suites/{suiteId}", tag = "providers", params(("suiteId" = inline(crate::domain::SuiteId), Path)), request_body(content = crate::domain::SuiteBody, content_type = "application/json"), responses((status = 200, description = "The suite, without secrets", body = crate::views::SuiteView), (status = 400, description = "Invalid parameter or body, naming the field"), (status = 401, description = "No bearer token"), (status = 403, description = "Wrong token, or ADMIN_TOKEN not set"), (status = 409, description = "SECRETS_KEY is not set"), (status = 413, description = "Body over 16 KiB"), (status = 503, description = "Store unavailable")))]
async fn put_suite(
    state: web::Data<AppState>,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, PuppetApiError> {
    let suite_id = SuiteId::parse(&path)?;
    let body: SuiteBody = state.json_body(payload).await?;
    let suite = Suite::parse(suite_id, body)?;
    require_secrets_key(
        &state,
        "SECRETS_KEY must be set to register a suite: its grants are never kept in clear",
    )?;
    state.store.put_suite(&suite, state.clock.now()).await?;
    changed(&state).await?;
    tracing::info!(suite_id = %suite.suite_id, "suite saved by an operator");
    Ok(HttpResponse::Ok().json(suite_view(state.store.as_ref(), &suite).await?))
}

#[utoipa::path(get, path = "/admin/api/suites", tag = "providers", responses((status = 200, description = "{items}: the suites, without secrets"), (status = 401, description = "No bearer token"), (status = 403, description = "Wrong token, or ADMIN_TOKEN not set"), (status = 503, description = "Store unavailable")))]
async fn list_suites(state: web::Data<AppState>) -> Result<HttpResponse, PuppetApiError> {
    let mut items = Vec::new();
    for suite in state.store.list_suites().await? {
        items.push(suite_view(state.store.as_ref(), &suite).await?);
    }
    Ok(HttpResponse::Ok().json(json!({ "items": items })))
}

#[utoipa::path(get, path = "/admin/api/suites/{suiteId}", tag = "providers", params(("suiteId" = inline(crate::domain::SuiteId), Path)), responses((status = 200, description = "The suite, without secrets", body = crate::views::SuiteView), (status = 400, description = "Invalid parameter"), (status = 401, description = "No bearer token"), (status = 403, description = "Wrong token, or ADMIN_TOKEN not set"), (status = 404, description = "Unknown suite"), (status = 503, description = "Store unavailable")))]
async fn show_suite(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, PuppetApiError> {
    let suite = known_suite(&state, &path).await?;
    Ok(HttpResponse::Ok().json(suite_view(state.store.as_ref(), &suite).await?))
}

/// The suite's configuration and keys go; its grants and tickets are kept
/// (sealed), so that registering it again serves its corps as before.
#[utoipa::path(delete, path = "/admin/api/suites/{suiteId}", tag = "providers", params(("suiteId" = inline(crate::domain::SuiteId), Path)), responses((status = 200, description = "Deleted (its grants are kept for a new registration)"), (status = 400, description = "Invalid parameter"), (status = 401, description = "No bearer token"), (status = 403, description = "Wrong token, or ADMIN_TOKEN not set"), (status = 404, description = "Unknown suite"), (status = 503, description = "Store unavailable")))]
async fn delete_suite(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, PuppetApiError> {
    let suite = known_suite(&state, &path).await?;
    state.store.delete_provider(&suite.provider()).await?;
    changed(&state).await?;
    tracing::info!(suite_id = %suite.suite_id, "suite deleted by an operator");
    Ok(super::ok())
}

#[utoipa::path(get, path = "/admin/api/suites/{suiteId}/corps", tag = "providers", params(("suiteId" = inline(crate::domain::SuiteId), Path)), responses((status = 200, description = "{items: [{corpId, corpName, status, authorizedAt, cancelledAt}]}: never a permanent code"), (status = 400, description = "Invalid parameter"), (status = 401, description = "No bearer token"), (status = 403, description = "Wrong token, or ADMIN_TOKEN not set"), (status = 404, description = "Unknown suite"), (status = 503, description = "Store unavailable")))]
async fn list_corps(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, PuppetApiError> {
    let suite = known_suite(&state, &path).await?;
    let grants = state.store.list_grants(&suite.provider()).await?;
    let items: Vec<_> = grants.iter().map(GrantView::from).collect();
    Ok(HttpResponse::Ok().json(json!({ "items": items })))
}

#[utoipa::path(post, path = "/admin/api/suites/{suiteId}/keys", tag = "providers", params(("suiteId" = inline(crate::domain::SuiteId), Path)), request_body(content = KeyBody, content_type = "application/json"), responses((status = 201, description = "{id, key, description, createdAt}: the key is shown only here"), (status = 400, description = "Invalid parameter or body, naming the field"), (status = 401, description = "No bearer token"), (status = 403, description = "Wrong token, or ADMIN_TOKEN not set"), (status = 404, description = "Unknown suite"), (status = 413, description = "Body over 16 KiB"), (status = 503, description = "Store unavailable")))]
async fn issue_key(
    state: web::Data<AppState>,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, PuppetApiError> {
    let suite = known_suite(&state, &path).await?;
    issue_provider_key(&state, &suite.provider(), payload).await
}

#[utoipa::path(get, path = "/admin/api/suites/{suiteId}/keys", tag = "providers", params(("suiteId" = inline(crate::domain::SuiteId), Path)), responses((status = 200, description = "{items: [{id, description, createdAt}]}: never a key"), (status = 400, description = "Invalid parameter"), (status = 401, description = "No bearer token"), (status = 403, description = "Wrong token, or ADMIN_TOKEN not set"), (status = 404, description = "Unknown suite"), (status = 503, description = "Store unavailable")))]
async fn list_keys(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, PuppetApiError> {
    let suite = known_suite(&state, &path).await?;
    provider_keys(&state, &suite.provider()).await
}

#[utoipa::path(delete, path = "/admin/api/suites/{suiteId}/keys/{id}", tag = "providers", params(("suiteId" = inline(crate::domain::SuiteId), Path), ("id" = String, Path)), responses((status = 200, description = "Revoked: in force on every manager within 2 s"), (status = 400, description = "Invalid parameter"), (status = 401, description = "No bearer token"), (status = 403, description = "Wrong token, or ADMIN_TOKEN not set"), (status = 404, description = "No such key of this suite"), (status = 503, description = "Store unavailable")))]
async fn revoke_key(
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, PuppetApiError> {
    let (suite, id) = path.into_inner();
    let provider = Provider::Suite(SuiteId::parse(&suite)?);
    revoke_provider_key(&state, &provider, &id).await
}

/// 409 unless `SECRETS_KEY` is set: a provider's grants are never kept in clear.
pub(super) fn require_secrets_key(
    state: &AppState,
    refusal: &'static str,
) -> Result<(), PuppetApiError> {
    if state.store.sealer().has_key() {
        Ok(())
    } else {
        Err(PuppetApiError::Conflict(refusal))
    }
}

/// Issue a key of a provider: shown once, kept as its digest.
pub(super) async fn issue_provider_key(
    state: &AppState,
    provider: &Provider,
    payload: web::Payload,
) -> Result<HttpResponse, PuppetApiError> {
    let body: KeyBody = state.json_body(payload).await?;
    let (key, shown) = AppKey::issue(provider.scope(), body.description, state.clock.now())?;
    state.store.put_app_key(&key).await?;
    changed(state).await?;
    tracing::info!(provider = %provider.scope(), key_id = %key.id, "provider key issued by an operator");
    let mut answer = serde_json::to_value(AppKeyView::from(&key)).unwrap_or_default();
    answer["key"] = shown.expose().into();
    Ok(HttpResponse::Created().json(answer))
}

pub(super) async fn provider_keys(
    state: &AppState,
    provider: &Provider,
) -> Result<HttpResponse, PuppetApiError> {
    let keys = state.store.list_app_keys(Some(&provider.scope())).await?;
    let items: Vec<_> = keys.iter().map(AppKeyView::from).collect();
    Ok(HttpResponse::Ok().json(json!({ "items": items })))
}

pub(super) async fn revoke_provider_key(
    state: &AppState,
    provider: &Provider,
    id: &str,
) -> Result<HttpResponse, PuppetApiError> {
    if !state.store.delete_app_key(&provider.scope(), id).await? {
        return Err(PuppetApiError::NotFound(match provider {
            Provider::Suite(_) => "no such key of this suite",
            Provider::Component(_) => "no such key of this component",
        }));
    }
    changed(state).await?;
    tracing::info!(provider = %provider.scope(), key_id = %id, "provider key revoked by an operator");
    Ok(super::ok())
}
