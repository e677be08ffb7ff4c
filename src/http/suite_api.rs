//! Downstream systems call WeCom for a suite's customer corps (API.md
//! §7.1): the corps, each corp's token from the shared cache, and a proxy
//! that adds it. Callers authenticate with a key of the suite; they never
//! hold the suite secret or a permanent code.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};

use super::provider_api::{customers, drop_stale, holds_key, provider_token, token_answer};
use super::tokens::wecom_error;
use super::wechat_api::{forward, Refusal};
use super::AppState;
use crate::domain::{CorpId, Suite};
use crate::views::GrantView;

/// WeCom's "this access token is not (or no longer) valid".
const STALE_TOKEN: [i64; 2] = [40014, 42001];

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/suite/{suite_id}/corps").get(corps))
        .service(web::resource("/suite/{suite_id}/corps/{corp_id}/token").get(token))
        .service(
            web::resource("/suite/{suite_id}/corps/{corp_id}/api/{path:.*}")
                .get(proxy)
                .post(proxy)
                .put(proxy)
                .delete(proxy)
                .patch(proxy),
        );
}

/// The suite, if the caller holds one of its keys: 404 unknown suite, 401
/// no key or not one of this suite's (before anything goes upstream).
fn authorized(state: &AppState, req: &HttpRequest) -> Result<std::sync::Arc<Suite>, Refusal> {
    let suite_id = req.match_info().query("suite_id");
    let Some(suite) = state.directory.get().suite(suite_id).cloned() else {
        return Err(Refusal(StatusCode::NOT_FOUND, "unknown suite"));
    };
    holds_key(state, req, &suite.provider())?;
    Ok(suite)
}

/// A customer corp's token and its seconds left, or the answer to give
/// instead: 404 no grant, 503 no ticket yet, else as an app's token.
pub(super) async fn corp_token(
    state: &AppState,
    suite: &Suite,
    corp: &CorpId,
) -> Result<(String, i64), HttpResponse> {
    let answer = state.providers.corp_token(suite, corp).await;
    provider_token(answer, suite.suite_id.as_str())
}

// A handler's helper: its error is the answer to give.
#[allow(clippy::result_large_err)]
fn corp_of(req: &HttpRequest) -> Result<CorpId, HttpResponse> {
    CorpId::parse(req.match_info().query("corp_id"))
        .map_err(|e| wecom_error(StatusCode::BAD_REQUEST, 400, &e.to_string()))
}

#[utoipa::path(get, path = "/suite/{suiteId}/corps", tag = "providers", params(("suiteId" = inline(crate::domain::SuiteId), Path)), responses((status = 200, description = "{items: [{corpId, corpName, status, authorizedAt, cancelledAt}]}, never a permanent code"), (status = 401, description = "No key, or not a key of this suite"), (status = 404, description = "Unknown suite"), (status = 503, description = "Store unavailable")))]
async fn corps(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    let suite = match authorized(&state, &req) {
        Ok(found) => found,
        Err(refusal) => return refusal.answer(),
    };
    customers(&state, &suite.provider(), |g| GrantView::from(g)).await
}

#[utoipa::path(get, path = "/suite/{suiteId}/corps/{corpId}/token", tag = "providers", params(("suiteId" = inline(crate::domain::SuiteId), Path), ("corpId" = inline(crate::domain::CorpId), Path)), responses((status = 200, description = "{access_token, expires_in} from the shared cache, or WeCom's {errcode, errmsg}"), (status = 400, description = "Malformed corpId"), (status = 401, description = "No key, or not a key of this suite"), (status = 404, description = "Unknown suite, or a corp without a grant"), (status = 502, description = "WeCom unreachable"), (status = 503, description = "No suite_ticket yet, or store unavailable")))]
async fn token(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    let suite = match authorized(&state, &req) {
        Ok(found) => found,
        Err(refusal) => return refusal.answer(),
    };
    let corp = match corp_of(&req) {
        Ok(corp) => corp,
        Err(answer) => return answer,
    };
    let answer = state.providers.corp_token(&suite, &corp).await;
    token_answer("access_token", answer, suite.suite_id.as_str())
}

#[utoipa::path(method(get, post, put, delete, patch), path = "/suite/{suiteId}/corps/{corpId}/api/{path}", tag = "providers", params(("suiteId" = inline(crate::domain::SuiteId), Path), ("corpId" = inline(crate::domain::CorpId), Path), ("path" = String, Path, description = "WeCom API path: segments of [A-Za-z0-9_.-], none of them . or ..", pattern = r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}(/[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}){0,7}$")), responses((status = 200, description = "WeCom's own status, content type and body"), (status = 400, description = "Not a plain API path ({errcode: 40058})"), (status = 401, description = "No key, or not a key of this suite"), (status = 404, description = "Unknown suite, or a corp without a grant"), (status = 413, description = "Body over 20 MiB"), (status = 502, description = "WeCom unreachable"), (status = 503, description = "No suite_ticket yet, or store unavailable")))]
async fn proxy(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> HttpResponse {
    let suite = match authorized(&state, &req) {
        Ok(found) => found,
        Err(refusal) => return refusal.answer(),
    };
    let corp = match corp_of(&req) {
        Ok(corp) => corp,
        Err(answer) => return answer,
    };
    let base = state.config.wecom_api_base.clone();
    let token_of = |stale: Option<String>| {
        let (state, suite, corp) = (&state, &suite, &corp);
        async move {
            drop_stale(state, stale).await;
            corp_token(state, suite, corp).await.map(|(t, _)| t)
        }
    };
    forward(
        &state,
        &req,
        payload,
        (&base, "access_token"),
        &STALE_TOKEN,
        token_of,
    )
    .await
}
