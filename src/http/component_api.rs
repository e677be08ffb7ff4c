//! Downstream systems call WeChat as an Open Platform component and for its
//! authorized accounts (API.md §7.2): the component's token and a proxy
//! that adds it, and each account's token and a proxy that adds that.
//! Callers authenticate with a key of the component; they never hold the
//! AppSecret, a ticket or a refresh token.

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};

use super::provider_api::{drop_stale, holds_key, provider_token, token_answer};
use super::tokens::wecom_error;
use super::wechat_api::{forward, Refusal};
use super::AppState;
use crate::domain::{AppId, Component};

/// WeChat's "this access token is not (or no longer) valid".
const STALE_TOKEN: [i64; 3] = [40001, 40014, 42001];

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/component/{component_id}/token").get(token))
        .service(
            web::resource("/component/{component_id}/api/{path:.*}")
                .get(proxy)
                .post(proxy)
                .put(proxy)
                .delete(proxy)
                .patch(proxy),
        )
        .service(
            web::resource("/component/{component_id}/authorizers/{app_id}/token")
                .get(authorizer_token),
        )
        .service(
            web::resource("/component/{component_id}/authorizers/{app_id}/api/{path:.*}")
                .get(authorizer_proxy)
                .post(authorizer_proxy)
                .put(authorizer_proxy)
                .delete(authorizer_proxy)
                .patch(authorizer_proxy),
        );
}

/// The component, if the caller holds one of its keys: 404 unknown, 401
/// no key or not one of this component's (before anything goes upstream).
// A handler's helper: its error is the answer to give.
#[allow(clippy::result_large_err)]
fn authorized(state: &AppState, req: &HttpRequest) -> Result<Arc<Component>, HttpResponse> {
    let id = req.match_info().query("component_id");
    let Some(component) = state.directory.get().component(id).cloned() else {
        return Err(Refusal(StatusCode::NOT_FOUND, "unknown component").answer());
    };
    holds_key(state, req, &component.provider()).map_err(|r| r.answer())?;
    Ok(component)
}

/// The component and the authorizer the path names.
#[allow(clippy::result_large_err)]
fn authorized_account(
    state: &AppState,
    req: &HttpRequest,
) -> Result<(Arc<Component>, AppId), HttpResponse> {
    let component = authorized(state, req)?;
    let app_id = AppId::parse(req.match_info().query("app_id"))
        .map_err(|e| wecom_error(StatusCode::BAD_REQUEST, 400, &e.to_string()))?;
    Ok((component, app_id))
}

#[utoipa::path(get, path = "/component/{componentAppId}/token", tag = "providers", params(("componentAppId" = inline(crate::domain::AppId), Path)), responses((status = 200, description = "{component_access_token, expires_in} from the shared cache, or WeChat's {errcode, errmsg}"), (status = 401, description = "No key, or not a key of this component"), (status = 404, description = "Unknown component"), (status = 502, description = "WeChat unreachable"), (status = 503, description = "No component_verify_ticket yet, or store unavailable")))]
async fn token(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    let component = match authorized(&state, &req) {
        Ok(found) => found,
        Err(answer) => return answer,
    };
    let answer = state.providers.component_token(&component).await;
    token_answer("component_access_token", answer, component.app_id.as_str())
}

#[utoipa::path(method(get, post, put, delete, patch), path = "/component/{componentAppId}/api/{path}", tag = "providers", params(("componentAppId" = inline(crate::domain::AppId), Path), ("path" = String, Path, description = "WeChat API path: segments of [A-Za-z0-9_.-], none of them . or ..", pattern = r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}(/[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}){0,7}$")), responses((status = 200, description = "WeChat's own status, content type and body"), (status = 400, description = "Not a plain API path ({errcode: 40058})"), (status = 401, description = "No key, or not a key of this component"), (status = 404, description = "Unknown component"), (status = 413, description = "Body over 20 MiB"), (status = 502, description = "WeChat unreachable"), (status = 503, description = "No component_verify_ticket yet, or store unavailable")))]
async fn proxy(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> HttpResponse {
    let component = match authorized(&state, &req) {
        Ok(found) => found,
        Err(answer) => return answer,
    };
    let base = state.config.wechat_api_base.clone();
    let token_of = |stale: Option<String>| {
        let (state, component) = (&state, &component);
        async move {
            drop_stale(state, stale).await;
            let answer = state.providers.component_token(component).await;
            provider_token(answer, component.app_id.as_str()).map(|(t, _)| t)
        }
    };
    let target = (base.as_str(), "component_access_token");
    forward(&state, &req, payload, target, &STALE_TOKEN, token_of).await
}

#[utoipa::path(get, path = "/component/{componentAppId}/authorizers/{appId}/token", tag = "providers", params(("componentAppId" = inline(crate::domain::AppId), Path), ("appId" = inline(crate::domain::AppId), Path)), responses((status = 200, description = "{access_token, expires_in} from the shared cache, or WeChat's {errcode, errmsg}"), (status = 400, description = "Malformed appId"), (status = 401, description = "No key, or not a key of this component"), (status = 404, description = "Unknown component, or an account without a grant"), (status = 502, description = "WeChat unreachable"), (status = 503, description = "No component_verify_ticket yet, or store unavailable")))]
async fn authorizer_token(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    let (component, app_id) = match authorized_account(&state, &req) {
        Ok(found) => found,
        Err(answer) => return answer,
    };
    let answer = state
        .providers
        .authorizer_token(&component, app_id.as_str())
        .await;
    token_answer("access_token", answer, app_id.as_str())
}

#[utoipa::path(method(get, post, put, delete, patch), path = "/component/{componentAppId}/authorizers/{appId}/api/{path}", tag = "providers", params(("componentAppId" = inline(crate::domain::AppId), Path), ("appId" = inline(crate::domain::AppId), Path), ("path" = String, Path, description = "WeChat API path: segments of [A-Za-z0-9_.-], none of them . or ..", pattern = r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}(/[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}){0,7}$")), responses((status = 200, description = "WeChat's own status, content type and body"), (status = 400, description = "Not a plain API path ({errcode: 40058}), or a malformed appId"), (status = 401, description = "No key, or not a key of this component"), (status = 404, description = "Unknown component, or an account without a grant"), (status = 413, description = "Body over 20 MiB"), (status = 502, description = "WeChat unreachable"), (status = 503, description = "No component_verify_ticket yet, or store unavailable")))]
async fn authorizer_proxy(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> HttpResponse {
    let (component, app_id) = match authorized_account(&state, &req) {
        Ok(found) => found,
        Err(answer) => return answer,
    };
    let base = state.config.wechat_api_base.clone();
    let token_of = |stale: Option<String>| {
        let (state, component, app_id) = (&state, &component, &app_id);
        async move {
            drop_stale(state, stale).await;
            let answer = state
                .providers
                .authorizer_token(component, app_id.as_str())
                .await;
            provider_token(answer, app_id.as_str()).map(|(t, _)| t)
        }
    };
    let target = (base.as_str(), "access_token");
    forward(&state, &req, payload, target, &STALE_TOKEN, token_of).await
}
