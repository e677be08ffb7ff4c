//! Downstream systems call WeChat through the manager (API.md §6.4): one
//! access token per app, shared by every caller and manager, fetched with
//! `stable_token` so that other holders of the AppSecret are not
//! invalidated; and a proxy that adds it. Callers authenticate with a key
//! an operator issued for the app; they never hold the AppSecret.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};

use super::tokens::{
    read_answer, read_proxy_body, safe_api_path, unreachable, wecom_error, PROXY_BODY_LIMIT,
};
use super::AppState;
use crate::domain::App;
use crate::tokens::{TokenAnswer, TokenSource};

/// WeChat's "this access token is not (or no longer) valid".
const STALE_TOKEN: [i64; 3] = [40001, 40014, 42001];

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/wechat/{app_id}/token").get(token))
        .service(
            web::resource("/wechat/{app_id}/api/{path:.*}")
                .get(proxy)
                .post(proxy)
                .put(proxy)
                .delete(proxy)
                .patch(proxy),
        );
}

/// Why a caller is refused, in WeChat's `{errcode, errmsg}` shape.
pub(super) struct Refusal(pub StatusCode, pub &'static str);

impl Refusal {
    pub(super) fn answer(&self) -> HttpResponse {
        wecom_error(self.0, i64::from(self.0.as_u16()), self.1)
    }
}

/// The app, if the caller holds one of its keys: 404 unknown app, 401 no
/// key or not one of this app's (before anything goes upstream), 409 no
/// AppSecret.
fn authorized(
    state: &AppState,
    req: &HttpRequest,
) -> Result<(std::sync::Arc<App>, String), Refusal> {
    let app_id = req.match_info().query("app_id");
    let directory = state.directory.get();
    let Some(app) = directory.app(app_id).cloned() else {
        return Err(Refusal(StatusCode::NOT_FOUND, "unknown app"));
    };
    let presented = presented_key(req);
    if !presented.is_some_and(|k| directory.app_key_valid(app_id, k)) {
        return Err(Refusal(
            StatusCode::UNAUTHORIZED,
            "a key of this app is required (Authorization: Bearer <key>)",
        ));
    }
    let Some(secret) = app.app_secret.as_ref().map(|s| s.expose().to_owned()) else {
        return Err(Refusal(
            StatusCode::CONFLICT,
            "this app has no appSecret registered",
        ));
    };
    Ok((app, secret))
}

/// The key a caller presents (`Authorization: Bearer <key>`).
pub(super) fn presented_key(req: &HttpRequest) -> Option<&str> {
    req.headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|k| !k.is_empty())
}

/// The app's token from the shared cache and its seconds left, or the
/// answer to give instead.
async fn app_token(
    state: &AppState,
    app: &App,
    secret: &str,
    force: bool,
) -> Result<(String, i64), HttpResponse> {
    let source = TokenSource::Wechat {
        appid: app.app_id.as_str(),
        secret,
    };
    let answer = state.tokens.get_for(source, force).await;
    token_or_answer(answer, app.app_id.as_str())
}

/// A token and its seconds left from the cache's answer, or the answer to
/// give instead (WeChat's own error, 502 unreachable, 503 no store).
#[allow(clippy::result_large_err)]
pub(super) fn token_or_answer(
    answer: Result<TokenAnswer, crate::store::StoreError>,
    whose: &str,
) -> Result<(String, i64), HttpResponse> {
    match answer {
        Ok(TokenAnswer::Token {
            access_token,
            expires_in,
        }) => Ok((access_token.expose().to_owned(), expires_in)),
        Ok(TokenAnswer::WecomError { errcode, errmsg }) => {
            Err(wecom_error(StatusCode::OK, errcode, &errmsg))
        }
        Ok(TokenAnswer::Unavailable { errmsg }) => {
            tracing::warn!(whose, reason = %errmsg, "no access token");
            Err(wecom_error(StatusCode::BAD_GATEWAY, -1, &errmsg))
        }
        Err(e) => {
            tracing::error!(error = %e, "store unavailable for the token cache");
            Err(wecom_error(
                StatusCode::SERVICE_UNAVAILABLE,
                -1,
                "store unavailable, retry later",
            ))
        }
    }
}

#[utoipa::path(get, path = "/wechat/{appId}/token", tag = "channels", params(("appId" = inline(crate::domain::AppId), Path)), responses((status = 200, description = "{access_token, expires_in} from the shared cache, or WeChat's {errcode, errmsg}"), (status = 401, description = "No key, or not a key of this app"), (status = 404, description = "Unknown app"), (status = 409, description = "The app has no appSecret"), (status = 502, description = "WeChat unreachable"), (status = 503, description = "Store unavailable")))]
async fn token(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    let (app, secret) = match authorized(&state, &req) {
        Ok(found) => found,
        Err(refusal) => return refusal.answer(),
    };
    match app_token(&state, &app, &secret, false).await {
        Ok((token, expires_in)) => HttpResponse::Ok()
            .json(serde_json::json!({"access_token": token, "expires_in": expires_in})),
        Err(answer) => answer,
    }
}

/// The caller's query without any `name` (the token parameter), then ours.
fn with_token(query: &str, name: &str, token: &str) -> String {
    let mut parts: Vec<&str> = query
        .split('&')
        .filter(|p| !p.is_empty() && p.split('=').next() != Some(name))
        .collect();
    let ours = format!("{name}={token}");
    parts.push(&ours);
    parts.join("&")
}

#[utoipa::path(method(get, post, put, delete, patch), path = "/wechat/{appId}/api/{path}", tag = "channels", params(("appId" = inline(crate::domain::AppId), Path), ("path" = String, Path, description = "WeChat API path: segments of [A-Za-z0-9_.-], none of them . or ..", pattern = r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}(/[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}){0,7}$")), responses((status = 200, description = "WeChat's own status, content type and body"), (status = 400, description = "Not a plain API path ({errcode: 40058})"), (status = 401, description = "No key, or not a key of this app"), (status = 404, description = "Unknown app"), (status = 409, description = "The app has no appSecret"), (status = 413, description = "Body over 20 MiB"), (status = 502, description = "WeChat unreachable")))]
async fn proxy(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> HttpResponse {
    let (app, secret) = match authorized(&state, &req) {
        Ok(found) => found,
        Err(refusal) => return refusal.answer(),
    };
    let base = state.config.wechat_api_base.clone();
    let token_of = |stale: Option<String>| {
        let (state, app, secret) = (&state, &app, &secret);
        async move {
            app_token(state, app, secret, stale.is_some())
                .await
                .map(|(t, _)| t)
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

/// Forward a caller's request to `{base}/{path}` with our access token (as
/// the query parameter `token_param`), and pass the answer back. When the answer's errcode is one of `stale`,
/// `token_of(Some(stale token))` gives a new one (within the source's
/// limits) and the request is sent once more; the same token back means
/// none could be had, and the first answer passes through.
pub(super) async fn forward<F, Fut>(
    state: &AppState,
    req: &HttpRequest,
    payload: web::Payload,
    (base, token_param): (&str, &str),
    stale: &[i64],
    token_of: F,
) -> HttpResponse
where
    F: Fn(Option<String>) -> Fut,
    Fut: std::future::Future<Output = Result<String, HttpResponse>>,
{
    let path = req.match_info().query("path").to_owned();
    if !safe_api_path(&path) {
        return wecom_error(StatusCode::BAD_REQUEST, 40058, "invalid API path");
    }
    let Ok(method) = reqwest::Method::from_bytes(req.method().as_str().as_bytes()) else {
        return wecom_error(StatusCode::METHOD_NOT_ALLOWED, 405, "method not allowed");
    };
    let body = if matches!(req.method().as_str(), "GET" | "HEAD") {
        None
    } else {
        match read_proxy_body(state, payload).await {
            Ok(body) => Some(body),
            Err(refused) => return refused,
        }
    };
    let send = |token: String| {
        let url = format!(
            "{base}/{path}?{}",
            with_token(req.query_string(), token_param, &token)
        );
        let mut upstream = state.upstream.request(method.clone(), url);
        if let Some(ct) = req.headers().get("content-type") {
            upstream = upstream.header("content-type", ct.as_bytes());
        }
        if let Some(body) = &body {
            upstream = upstream.body(body.clone());
        }
        async move {
            match upstream.send().await {
                Ok(resp) => read_answer(resp, PROXY_BODY_LIMIT).await,
                Err(e) => Err(unreachable(&e)),
            }
        }
    };
    let token = match token_of(None).await {
        Ok(token) => token,
        Err(answer) => return answer,
    };
    let answer = match send(token.clone()).await {
        Ok(answer) => answer,
        Err(response) => return response,
    };
    let errcode = serde_json::from_slice::<serde_json::Value>(&answer.body)
        .ok()
        .and_then(|v| v["errcode"].as_i64());
    if !errcode.is_some_and(|e| stale.contains(&e)) {
        return answer.into_response();
    }
    // The token is stale: a new one, and the request once more. Beyond the
    // source's limits the cache gives the same token back, and the first
    // answer passes through.
    match token_of(Some(token.clone())).await {
        Ok(fresh) if fresh != token => {
            tracing::info!(path = %path, errcode, "the API refused the access token; fetched another and sent the request again");
            match send(fresh).await {
                Ok(again) => again.into_response(),
                Err(response) => response,
            }
        }
        _ => answer.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::with_token;

    #[test]
    fn the_callers_access_token_is_replaced_by_ours() {
        assert_eq!(with_token("", "access_token", "T"), "access_token=T");
        assert_eq!(
            with_token(
                "access_token=theirs&type=image&access_token=again",
                "access_token",
                "T"
            ),
            "type=image&access_token=T"
        );
    }
}
