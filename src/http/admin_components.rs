//! The operator API for Open Platform components (API.md §7.2): components,
//! their authorized accounts (and the way back from a lost refresh token,
//! `authorizers/sync`), and their keys. A component is accepted only with
//! `SECRETS_KEY` set: a refresh token is API access to a merchant's
//! account and is never kept in clear.

use actix_web::{web, HttpResponse};
use serde_json::json;

use super::admin_providers::{
    changed, issue_provider_key, provider_keys, require_secrets_key, revoke_provider_key,
};
use super::error::PuppetApiError;
use super::AppState;
use crate::domain::{AppId, Component, ComponentBody, Provider};
use crate::providers::ProviderError;
use crate::store::Providers;
use crate::views::{AuthorizerView, ComponentView};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/components").get(list_components))
        .service(
            web::resource("/components/{component_id}")
                .put(put_component)
                .get(show_component)
                .delete(delete_component),
        )
        .service(web::resource("/components/{component_id}/authorizers").get(list_authorizers))
        .service(web::resource("/components/{component_id}/authorizers/sync").post(sync))
        .service(
            web::resource("/components/{component_id}/keys")
                .post(issue_key)
                .get(list_keys),
        )
        .service(web::resource("/components/{component_id}/keys/{id}").delete(revoke_key));
}

/// A component as operators see it: with its newest ticket's arrival and
/// how many accounts hold a grant.
pub(crate) async fn component_view(
    store: &dyn crate::store::Store,
    component: &Component,
) -> Result<ComponentView, crate::store::StoreError> {
    let provider = component.provider();
    let ticket = store.ticket(&provider).await?;
    let authorizers = crate::providers::customers(store, &provider).await?;
    Ok(ComponentView::new(
        component,
        ticket.map(|t| t.received_at),
        authorizers,
    ))
}

async fn known_component(state: &AppState, raw: &str) -> Result<Component, PuppetApiError> {
    let app_id = AppId::parse(raw)?;
    state
        .store
        .get_component(&app_id)
        .await?
        .ok_or(PuppetApiError::NotFound("unknown component"))
}

#[utoipa::path(put, path = "/admin/api/components/{componentAppId}", tag = "providers", params(("componentAppId" = inline(crate::domain::AppId), Path)), request_body(content = crate::domain::ComponentBody, content_type = "application/json"), responses((status = 200, description = "The component, without secrets", body = crate::views::ComponentView), (status = 400, description = "Invalid parameter or body, naming the field"), (status = 401, description = "No bearer token"), (status = 403, description = "Wrong token, or ADMIN_TOKEN not set"), (status = 409, description = "SECRETS_KEY is not set"), (status = 413, description = "Body over 16 KiB"), (status = 503, description = "Store unavailable")))]
async fn put_component(
    state: web::Data<AppState>,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, PuppetApiError> {
    let app_id = AppId::parse(&path)?;
    let body: ComponentBody = state.json_body(payload).await?;
    let component = Component::parse(app_id, body)?;
    require_secrets_key(
        &state,
        "SECRETS_KEY must be set to register a component: its refresh tokens are never kept in clear",
    )?;
    state
        .store
        .put_component(&component, state.clock.now())
        .await?;
    changed(&state).await?;
    tracing::info!(component = %component.app_id, "component saved by an operator");
    Ok(HttpResponse::Ok().json(component_view(state.store.as_ref(), &component).await?))
}

#[utoipa::path(get, path = "/admin/api/components", tag = "providers", responses((status = 200, description = "{items}: the components, without secrets"), (status = 401, description = "No bearer token"), (status = 403, description = "Wrong token, or ADMIN_TOKEN not set"), (status = 503, description = "Store unavailable")))]
async fn list_components(state: web::Data<AppState>) -> Result<HttpResponse, PuppetApiError> {
    let mut items = Vec::new();
    for component in state.store.list_components().await? {
        items.push(component_view(state.store.as_ref(), &component).await?);
    }
    Ok(HttpResponse::Ok().json(json!({ "items": items })))
}

#[utoipa::path(get, path = "/admin/api/components/{componentAppId}", tag = "providers", params(("componentAppId" = inline(crate::domain::AppId), Path)), responses((status = 200, description = "The component, without secrets", body = crate::views::ComponentView), (status = 400, description = "Invalid parameter"), (status = 401, description = "No bearer token"), (status = 403, description = "Wrong token, or ADMIN_TOKEN not set"), (status = 404, description = "Unknown component"), (status = 503, description = "Store unavailable")))]
async fn show_component(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, PuppetApiError> {
    let component = known_component(&state, &path).await?;
    Ok(HttpResponse::Ok().json(component_view(state.store.as_ref(), &component).await?))
}

/// The component's configuration and keys go; its grants and tickets are
/// kept (sealed), so that registering it again serves its accounts as before.
#[utoipa::path(delete, path = "/admin/api/components/{componentAppId}", tag = "providers", params(("componentAppId" = inline(crate::domain::AppId), Path)), responses((status = 200, description = "Deleted (its grants are kept for a new registration)"), (status = 400, description = "Invalid parameter"), (status = 401, description = "No bearer token"), (status = 403, description = "Wrong token, or ADMIN_TOKEN not set"), (status = 404, description = "Unknown component"), (status = 503, description = "Store unavailable")))]
async fn delete_component(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, PuppetApiError> {
    let component = known_component(&state, &path).await?;
    state.store.delete_provider(&component.provider()).await?;
    changed(&state).await?;
    tracing::info!(component = %component.app_id, "component deleted by an operator");
    Ok(super::ok())
}

#[utoipa::path(get, path = "/admin/api/components/{componentAppId}/authorizers", tag = "providers", params(("componentAppId" = inline(crate::domain::AppId), Path)), responses((status = 200, description = "{items: [{appId, status, authorizedAt, unauthorizedAt}]}: never a refresh token"), (status = 400, description = "Invalid parameter"), (status = 401, description = "No bearer token"), (status = 403, description = "Wrong token, or ADMIN_TOKEN not set"), (status = 404, description = "Unknown component"), (status = 503, description = "Store unavailable")))]
async fn list_authorizers(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, PuppetApiError> {
    let component = known_component(&state, &path).await?;
    let grants = state.store.list_grants(&component.provider()).await?;
    let items: Vec<_> = grants.iter().map(AuthorizerView::from).collect();
    Ok(HttpResponse::Ok().json(json!({ "items": items })))
}

/// Re-read every authorizer's refresh token from WeChat and keep those not
/// held, or held stale.
#[utoipa::path(post, path = "/admin/api/components/{componentAppId}/authorizers/sync", tag = "providers", params(("componentAppId" = inline(crate::domain::AppId), Path)), responses((status = 200, description = "{authorizers, recovered}", body = crate::providers::Synced), (status = 400, description = "Invalid parameter"), (status = 401, description = "No bearer token"), (status = 403, description = "Wrong token, or ADMIN_TOKEN not set"), (status = 404, description = "Unknown component"), (status = 409, description = "No component_verify_ticket has arrived yet"), (status = 502, description = "WeChat refused or could not be reached"), (status = 503, description = "Store unavailable")))]
async fn sync(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, PuppetApiError> {
    let component = known_component(&state, &path).await?;
    match state.providers.sync(&component).await {
        Ok(synced) => Ok(HttpResponse::Ok().json(synced)),
        Err(ProviderError::Store(e)) => Err(e.into()),
        // Nothing can be asked of WeChat before the first ticket: the
        // component's state, not the manager, is what is missing.
        Err(e @ (ProviderError::NoComponentTicket | ProviderError::NoSuiteTicket)) => {
            Ok(HttpResponse::Conflict().json(json!({"code": 409, "message": e.to_string()})))
        }
        Err(e) => {
            Ok(HttpResponse::BadGateway().json(json!({"code": 502, "message": e.to_string()})))
        }
    }
}

#[utoipa::path(post, path = "/admin/api/components/{componentAppId}/keys", tag = "providers", params(("componentAppId" = inline(crate::domain::AppId), Path)), request_body(content = super::admin_channels::KeyBody, content_type = "application/json"), responses((status = 201, description = "{id, key, description, createdAt}: the key is shown only here"), (status = 400, description = "Invalid parameter or body, naming the field"), (status = 401, description = "No bearer token"), (status = 403, description = "Wrong token, or ADMIN_TOKEN not set"), (status = 404, description = "Unknown component"), (status = 413, description = "Body over 16 KiB"), (status = 503, description = "Store unavailable")))]
async fn issue_key(
    state: web::Data<AppState>,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, PuppetApiError> {
    let component = known_component(&state, &path).await?;
    issue_provider_key(&state, &component.provider(), payload).await
}

#[utoipa::path(get, path = "/admin/api/components/{componentAppId}/keys", tag = "providers", params(("componentAppId" = inline(crate::domain::AppId), Path)), responses((status = 200, description = "{items: [{id, description, createdAt}]}: never a key"), (status = 400, description = "Invalid parameter"), (status = 401, description = "No bearer token"), (status = 403, description = "Wrong token, or ADMIN_TOKEN not set"), (status = 404, description = "Unknown component"), (status = 503, description = "Store unavailable")))]
async fn list_keys(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, PuppetApiError> {
    let component = known_component(&state, &path).await?;
    provider_keys(&state, &component.provider()).await
}

#[utoipa::path(delete, path = "/admin/api/components/{componentAppId}/keys/{id}", tag = "providers", params(("componentAppId" = inline(crate::domain::AppId), Path), ("id" = String, Path)), responses((status = 200, description = "Revoked: in force on every manager within 2 s"), (status = 400, description = "Invalid parameter"), (status = 401, description = "No bearer token"), (status = 403, description = "Wrong token, or ADMIN_TOKEN not set"), (status = 404, description = "No such key of this component"), (status = 503, description = "Store unavailable")))]
async fn revoke_key(
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, PuppetApiError> {
    let (component, id) = path.into_inner();
    let provider = Provider::Component(AppId::parse(&component)?);
    revoke_provider_key(&state, &provider, &id).await
}
