//! The operator API for channels (API.md §6.1 to 6.3): apps, subscriptions,
//! and corp credentials an operator adds without a puppet. Every change is
//! in force on this manager at once (the directory is re-read) and on the
//! others within their next refresh.

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::error::PuppetApiError;
use super::puppets::check_endpoint;
use super::AppState;
use crate::domain::{
    App, AppBody, AppId, AppKey, CorpId, CredentialSet, Subscription, SubscriptionBody,
    SubscriptionPatch,
};
use crate::store::Channels;
use crate::views::{AppKeyView, AppView, SubscriptionView};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/apps").get(list_apps))
        .service(
            web::resource("/apps/{app_id}")
                .put(put_app)
                .get(show_app)
                .delete(delete_app),
        )
        .service(
            web::resource("/subscriptions")
                .post(create_subscription)
                .get(list_subscriptions),
        )
        .service(
            web::resource("/subscriptions/{id}")
                .get(show_subscription)
                .patch(change_subscription)
                .delete(delete_subscription),
        )
        .service(
            web::resource("/apps/{app_id}/keys")
                .post(issue_key)
                .get(list_keys),
        )
        .service(web::resource("/apps/{app_id}/keys/{id}").delete(revoke_key))
        .service(web::resource("/corps/{corp_id}").get(show_corp));
}

/// After a change made here: in force on this manager now.
async fn changed(state: &AppState) -> Result<(), PuppetApiError> {
    state.directory.refresh(state.store.as_ref()).await?;
    Ok(())
}

#[utoipa::path(put, path = "/admin/api/apps/{appId}", tag = "channels", params(("appId" = inline(crate::domain::AppId), Path)), request_body(content = crate::domain::AppBody, content_type = "application/json"), responses((status = 413, description = "Body over 16 KiB"), (status = 200, description = "The app, without secrets", body = crate::views::AppView), (status = 400, description = "Invalid parameter or body, naming the field"), (status = 401, description = "No bearer token"), (status = 403, description = "Wrong token, or ADMIN_TOKEN not set"), (status = 503, description = "Store unavailable")))]
async fn put_app(
    state: web::Data<AppState>,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, PuppetApiError> {
    let app_id = AppId::parse(&path)?;
    let body: AppBody = state.json_body(payload).await?;
    let app = App::parse(app_id, body)?;
    state.store.put_app(&app, state.clock.now()).await?;
    changed(&state).await?;
    tracing::info!(app_id = %app.app_id, kind = app.kind.as_str(), "app saved by an operator");
    Ok(HttpResponse::Ok().json(AppView::from(&app)))
}

#[utoipa::path(get, path = "/admin/api/apps", tag = "channels", responses((status = 200, description = "{items}: the apps, without secrets"), (status = 401, description = "No bearer token"), (status = 403, description = "Wrong token, or ADMIN_TOKEN not set"), (status = 503, description = "Store unavailable")))]
async fn list_apps(state: web::Data<AppState>) -> Result<HttpResponse, PuppetApiError> {
    let items: Vec<_> = state
        .store
        .list_apps()
        .await?
        .iter()
        .map(AppView::from)
        .collect();
    Ok(HttpResponse::Ok().json(json!({"items": items})))
}

#[utoipa::path(get, path = "/admin/api/apps/{appId}", tag = "channels", params(("appId" = inline(crate::domain::AppId), Path)), responses((status = 200, description = "The app, without secrets", body = crate::views::AppView), (status = 404, description = "Unknown app"), (status = 400, description = "Invalid parameter or body, naming the field"), (status = 401, description = "No bearer token"), (status = 403, description = "Wrong token, or ADMIN_TOKEN not set"), (status = 503, description = "Store unavailable")))]
async fn show_app(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, PuppetApiError> {
    let app_id = AppId::parse(&path)?;
    match state.store.get_app(&app_id).await? {
        Some(app) => Ok(HttpResponse::Ok().json(AppView::from(&app))),
        None => Err(PuppetApiError::NotFound("unknown app")),
    }
}

#[utoipa::path(delete, path = "/admin/api/apps/{appId}", tag = "channels", params(("appId" = inline(crate::domain::AppId), Path)), responses((status = 200, description = "Deleted"), (status = 404, description = "Unknown app"), (status = 400, description = "Invalid parameter or body, naming the field"), (status = 401, description = "No bearer token"), (status = 403, description = "Wrong token, or ADMIN_TOKEN not set"), (status = 503, description = "Store unavailable")))]
async fn delete_app(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, PuppetApiError> {
    let app_id = AppId::parse(&path)?;
    if !state.store.delete_app(&app_id).await? {
        return Err(PuppetApiError::NotFound("unknown app"));
    }
    changed(&state).await?;
    tracing::info!(app_id = %app_id, "app deleted by an operator");
    Ok(super::ok())
}

/// A new app key (§6.4).
#[derive(Deserialize, utoipa::ToSchema)]
pub(super) struct KeyBody {
    #[schema(pattern = r"^[^\u0000-\u001f\u007f-\u009f]{0,256}$")]
    pub(super) description: Option<String>,
}

async fn known_app(state: &AppState, raw: &str) -> Result<AppId, PuppetApiError> {
    let app_id = AppId::parse(raw)?;
    match state.store.get_app(&app_id).await? {
        Some(_) => Ok(app_id),
        None => Err(PuppetApiError::NotFound("unknown app")),
    }
}

/// Issue a key for downstream systems (§6.4): shown in this answer only.
#[utoipa::path(post, path = "/admin/api/apps/{appId}/keys", tag = "channels", params(("appId" = inline(crate::domain::AppId), Path)), request_body(content = KeyBody, content_type = "application/json"), responses((status = 413, description = "Body over 16 KiB"), (status = 201, description = "{id, key, description, createdAt}: the key is shown only here"), (status = 404, description = "Unknown app"), (status = 400, description = "Invalid parameter or body, naming the field"), (status = 401, description = "No bearer token"), (status = 403, description = "Wrong token, or ADMIN_TOKEN not set"), (status = 503, description = "Store unavailable")))]
async fn issue_key(
    state: web::Data<AppState>,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, PuppetApiError> {
    let app_id = known_app(&state, &path).await?;
    let body: KeyBody = state.json_body(payload).await?;
    let (key, shown) = AppKey::issue(app_id.to_string(), body.description, state.clock.now())?;
    state.store.put_app_key(&key).await?;
    changed(&state).await?;
    tracing::info!(app_id = %key.owner, key_id = %key.id, "app key issued by an operator");
    let mut answer = serde_json::to_value(AppKeyView::from(&key)).unwrap_or_default();
    answer["key"] = shown.expose().into();
    Ok(HttpResponse::Created().json(answer))
}

#[utoipa::path(get, path = "/admin/api/apps/{appId}/keys", tag = "channels", params(("appId" = inline(crate::domain::AppId), Path)), responses((status = 200, description = "{items: [{id, description, createdAt}]}: never a key"), (status = 404, description = "Unknown app"), (status = 400, description = "Invalid parameter or body, naming the field"), (status = 401, description = "No bearer token"), (status = 403, description = "Wrong token, or ADMIN_TOKEN not set"), (status = 503, description = "Store unavailable")))]
async fn list_keys(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, PuppetApiError> {
    let app_id = known_app(&state, &path).await?;
    let items: Vec<_> = state
        .store
        .list_app_keys(Some(app_id.as_str()))
        .await?
        .iter()
        .map(AppKeyView::from)
        .collect();
    Ok(HttpResponse::Ok().json(json!({"items": items})))
}

#[utoipa::path(delete, path = "/admin/api/apps/{appId}/keys/{id}", tag = "channels", params(("appId" = inline(crate::domain::AppId), Path), ("id" = String, Path)), responses((status = 200, description = "Revoked: in force on every manager within 2 s"), (status = 404, description = "No such key of this app"), (status = 400, description = "Invalid parameter or body, naming the field"), (status = 401, description = "No bearer token"), (status = 403, description = "Wrong token, or ADMIN_TOKEN not set"), (status = 503, description = "Store unavailable")))]
async fn revoke_key(
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, PuppetApiError> {
    let (app, id) = path.into_inner();
    let app_id = AppId::parse(&app)?;
    if !state.store.delete_app_key(app_id.as_str(), &id).await? {
        return Err(PuppetApiError::NotFound("no such key of this app"));
    }
    changed(&state).await?;
    tracing::info!(app_id = %app_id, key_id = %id, "app key revoked by an operator");
    Ok(super::ok())
}

#[utoipa::path(post, path = "/admin/api/subscriptions", tag = "channels", request_body(content = crate::domain::SubscriptionBody, content_type = "application/json"), responses((status = 413, description = "Body over 16 KiB"), (status = 201, description = "{id, source, endpoint, filter, description, secret}: the secret is shown only here"), (status = 400, description = "Invalid parameter or body, naming the field"), (status = 401, description = "No bearer token"), (status = 403, description = "Wrong token, or ADMIN_TOKEN not set"), (status = 503, description = "Store unavailable")))]
async fn create_subscription(
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse, PuppetApiError> {
    let body: SubscriptionBody = state.json_body(payload).await?;
    let now = state.clock.now();
    let subscription = Subscription::create(body, now)?;
    check_endpoint(&state, &subscription.endpoint).await?;
    state.store.put_subscription(&subscription, now).await?;
    changed(&state).await?;
    tracing::info!(subscription_id = %subscription.id, source = %subscription.source, "subscription created by an operator");
    let mut shown = serde_json::to_value(SubscriptionView::from(&subscription)).unwrap_or_default();
    shown["secret"] = subscription.secret.expose().into();
    Ok(HttpResponse::Created().json(shown))
}

#[derive(Deserialize)]
struct SourceQuery {
    source: Option<String>,
}

#[utoipa::path(get, path = "/admin/api/subscriptions", tag = "channels", params(("source" = inline(Option<crate::domain::IdFilter>), Query, nullable = false, description = "Empty: every source")), responses((status = 200, description = "{items}: never a secret"), (status = 400, description = "Invalid parameter or body, naming the field"), (status = 401, description = "No bearer token"), (status = 403, description = "Wrong token, or ADMIN_TOKEN not set"), (status = 503, description = "Store unavailable")))]
async fn list_subscriptions(
    state: web::Data<AppState>,
    query: web::Query<SourceQuery>,
) -> Result<HttpResponse, PuppetApiError> {
    let source = match query.source.as_deref() {
        None | Some("") => None,
        Some(s) => Some(
            CorpId::parse(s)
                .map_err(|_| {
                    PuppetApiError::BadRequest(
                        "source: must be 1 to 64 characters of [A-Za-z0-9_-]".into(),
                    )
                })?
                .as_str()
                .to_owned(),
        ),
    };
    let items: Vec<_> = state
        .store
        .list_subscriptions(source.as_deref())
        .await?
        .iter()
        .map(SubscriptionView::from)
        .collect();
    Ok(HttpResponse::Ok().json(json!({"items": items})))
}

async fn find_subscription(state: &AppState, id: &str) -> Result<Subscription, PuppetApiError> {
    state
        .store
        .get_subscription(id)
        .await?
        .ok_or(PuppetApiError::NotFound("unknown subscription"))
}

#[utoipa::path(get, path = "/admin/api/subscriptions/{id}", tag = "channels", params(("id" = String, Path)), responses((status = 200, description = "The subscription, without its secret", body = crate::views::SubscriptionView), (status = 404, description = "Unknown subscription"), (status = 401, description = "No bearer token"), (status = 403, description = "Wrong token, or ADMIN_TOKEN not set"), (status = 503, description = "Store unavailable")))]
async fn show_subscription(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, PuppetApiError> {
    let subscription = find_subscription(&state, &path).await?;
    Ok(HttpResponse::Ok().json(SubscriptionView::from(&subscription)))
}

#[utoipa::path(patch, path = "/admin/api/subscriptions/{id}", tag = "channels", params(("id" = String, Path)), request_body(content = crate::domain::SubscriptionPatch, content_type = "application/json"), responses((status = 413, description = "Body over 16 KiB"), (status = 200, description = "The subscription, without its secret", body = crate::views::SubscriptionView), (status = 404, description = "Unknown subscription"), (status = 400, description = "Invalid parameter or body, naming the field"), (status = 401, description = "No bearer token"), (status = 403, description = "Wrong token, or ADMIN_TOKEN not set"), (status = 503, description = "Store unavailable")))]
async fn change_subscription(
    state: web::Data<AppState>,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, PuppetApiError> {
    let body: SubscriptionPatch = state.json_body(payload).await?;
    let mut subscription = find_subscription(&state, &path).await?;
    let new_endpoint = body.endpoint.is_some();
    subscription.apply(body.into())?;
    if new_endpoint {
        check_endpoint(&state, &subscription.endpoint).await?;
    }
    state
        .store
        .put_subscription(&subscription, state.clock.now())
        .await?;
    changed(&state).await?;
    if new_endpoint {
        // What waited in backoff for the old endpoint goes to the new one now.
        let woken = state
            .store
            .wake_subscription(&subscription.id, state.clock.now())
            .await?;
        if woken > 0 {
            state.dispatcher.wake();
        }
    }
    tracing::info!(subscription_id = %subscription.id, "subscription changed by an operator");
    Ok(HttpResponse::Ok().json(SubscriptionView::from(&subscription)))
}

#[utoipa::path(delete, path = "/admin/api/subscriptions/{id}", tag = "channels", params(("id" = String, Path)), responses((status = 200, description = "Deleted"), (status = 404, description = "Unknown subscription"), (status = 401, description = "No bearer token"), (status = 403, description = "Wrong token, or ADMIN_TOKEN not set"), (status = 503, description = "Store unavailable")))]
async fn delete_subscription(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, PuppetApiError> {
    if !state.store.delete_subscription(&path).await? {
        return Err(PuppetApiError::NotFound("unknown subscription"));
    }
    changed(&state).await?;
    tracing::info!(subscription_id = %path.as_str(), "subscription deleted by an operator");
    Ok(super::ok())
}

/// How many credential sets a corp has and where each came from.
#[utoipa::path(get, path = "/admin/api/corps/{corpId}", tag = "channels", params(("corpId" = inline(crate::domain::CorpId), Path)), responses((status = 200, description = "{corpId, credentialSets: [{from: puppet | operator}], puppets}"), (status = 404, description = "No credentials and no puppet for this corp"), (status = 400, description = "Invalid parameter or body, naming the field"), (status = 401, description = "No bearer token"), (status = 403, description = "Wrong token, or ADMIN_TOKEN not set"), (status = 503, description = "Store unavailable")))]
async fn show_corp(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, PuppetApiError> {
    let corp = CorpId::parse(&path)?;
    let from_puppets = state.store.corp_credentials(&corp).await?;
    let from_operator = state.store.operator_credentials(Some(&corp)).await?;
    let puppets = state.store.count_puppets(&corp).await?;
    if from_puppets.is_empty() && from_operator.is_empty() && puppets == 0 {
        return Err(PuppetApiError::NotFound(
            "no credentials and no puppet for this corp",
        ));
    }
    let sets: Vec<_> = from_puppets
        .iter()
        .map(|_| json!({"from": "puppet"}))
        .chain(from_operator.iter().map(|_| json!({"from": "operator"})))
        .collect();
    Ok(HttpResponse::Ok().json(json!({
        "corpId": corp.as_str(),
        "credentialSets": sets,
        "puppets": puppets,
    })))
}

/// PUT without `previousToken` (§6.2): add an operator set; a set already
/// there (its token known) is kept as is.
pub(super) async fn add_credentials(
    state: &AppState,
    corp: &CorpId,
    set: &CredentialSet,
) -> Result<HttpResponse, PuppetApiError> {
    let known = state
        .store
        .corp_credentials(corp)
        .await?
        .iter()
        .any(|s| s.token.expose() == set.token.expose());
    let added = !known
        && state
            .store
            .add_corp_credentials(corp, set, state.clock.now())
            .await?;
    if added {
        changed(state).await?;
        tracing::info!(corp_id = %corp, "credentials added by an operator");
    }
    Ok(HttpResponse::Ok().json(json!({"code": 0, "message": "success", "added": added})))
}

#[derive(Deserialize)]
pub(super) struct TokenQuery {
    token: Option<String>,
}

/// DELETE `/admin/api/corps/{corpId}/credentials?token=`: remove an
/// operator-added set.
#[utoipa::path(delete, path = "/admin/api/corps/{corpId}/credentials", tag = "channels", params(("corpId" = inline(crate::domain::CorpId), Path), ("token" = String, Query, min_length = 1, max_length = 128)), responses((status = 200, description = "Removed"), (status = 404, description = "No operator-added set with this token"), (status = 400, description = "Invalid parameter or body, naming the field"), (status = 401, description = "No bearer token"), (status = 403, description = "Wrong token, or ADMIN_TOKEN not set"), (status = 503, description = "Store unavailable")))]
pub(super) async fn remove_credentials(
    state: web::Data<AppState>,
    path: web::Path<String>,
    query: web::Query<TokenQuery>,
) -> Result<HttpResponse, PuppetApiError> {
    let corp = CorpId::parse(&path)?;
    let token = query
        .token
        .as_deref()
        .filter(|t| !t.is_empty())
        .ok_or_else(|| PuppetApiError::BadRequest("token: missing".into()))?;
    if !state.store.remove_corp_credentials(&corp, token).await? {
        return Err(PuppetApiError::NotFound(
            "no operator-added credentials with this token",
        ));
    }
    changed(&state).await?;
    tracing::info!(corp_id = %corp, "operator credentials removed");
    Ok(super::ok())
}
