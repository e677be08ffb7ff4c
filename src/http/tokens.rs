//! getToken and the WeCom API proxy (API.md §1): answers in WeCom's own
//! `{errcode, errmsg, ...}` shape, also when WeCom cannot be reached.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};

use super::body::{read_limited, BodyError};
use super::query::param;
use super::AppState;
use crate::tokens::TokenAnswer;

/// Proxied requests and answers (media included) stay under this.
pub(super) const PROXY_BODY_LIMIT: usize = 20 * 1024 * 1024;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/getToken").get(get_token))
        .service(
            web::resource("/wxkfRequestProxy/{path:.*}")
                .get(proxy)
                .post(proxy),
        );
}

pub(super) fn wecom_error(status: StatusCode, errcode: i64, errmsg: &str) -> HttpResponse {
    HttpResponse::build(status).json(serde_json::json!({"errcode": errcode, "errmsg": errmsg}))
}

pub(super) fn unreachable(e: &reqwest::Error) -> HttpResponse {
    let why = if e.is_timeout() {
        "timed out"
    } else {
        "connection failed"
    };
    tracing::warn!(reason = why, "WeCom API unreachable");
    wecom_error(
        StatusCode::BAD_GATEWAY,
        -1,
        &format!("WeCom API unreachable: {why}"),
    )
}

#[utoipa::path(get, path = "/puppetWxkfManager/getToken", tag = "tokens", params(("corpid" = String, Query, description = "Corp id", min_length = 1, max_length = 64), ("corpsecret" = String, Query, description = "App secret", min_length = 1, max_length = 256), ("force" = Option<String>, Query, description = "1: refresh now (at most once a minute per app)")), responses((status = 200, description = "{errcode, errmsg, access_token, expires_in} (WeCom shape, errors included)"), (status = 400, description = "corpid or corpsecret missing (41002 / 41004)"), (status = 502, description = "WeCom unreachable ({errcode: -1, errmsg})"), (status = 503, description = "Store unavailable")))]
async fn get_token(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    let q = req.query_string();
    let Some(corpid) = param(q, "corpid").filter(|v| !v.is_empty() && v.chars().count() <= 64)
    else {
        return wecom_error(StatusCode::BAD_REQUEST, 41002, "corpid missing");
    };
    let Some(corpsecret) =
        param(q, "corpsecret").filter(|v| !v.is_empty() && v.chars().count() <= 256)
    else {
        return wecom_error(StatusCode::BAD_REQUEST, 41004, "corpsecret missing");
    };
    let force = matches!(param(q, "force").as_deref(), Some("1" | "true"));
    // A puppet of a suite's customer corp presents a key of the suite (§7.1).
    let suite = corpsecret
        .starts_with(crate::domain::KEY_PREFIX)
        .then(|| state.directory.get().suite_of_key(&corpsecret))
        .flatten();
    if let Some(suite) = suite {
        return suite_corp_token(&state, &suite, &corpid).await;
    }
    match state.tokens.get(&corpid, &corpsecret, force).await {
        Ok(TokenAnswer::Token { access_token, expires_in }) => HttpResponse::Ok().json(serde_json::json!({
            "errcode": 0, "errmsg": "ok", "access_token": access_token.expose(), "expires_in": expires_in,
        })),
        Ok(TokenAnswer::WecomError { errcode, errmsg }) => wecom_error(StatusCode::OK, errcode, &errmsg),
        Ok(TokenAnswer::Unavailable { errmsg }) => {
            tracing::warn!(corp_id = %corpid, reason = %errmsg, "no access token");
            wecom_error(StatusCode::BAD_GATEWAY, -1, &errmsg)
        }
        Err(e) => {
            tracing::error!(error = %e, "store unavailable for the token cache");
            wecom_error(StatusCode::SERVICE_UNAVAILABLE, -1, "store unavailable, retry later")
        }
    }
}

/// getToken for a suite's customer corp, in WeCom's shape: the corp token
/// from the shared cache.
async fn suite_corp_token(
    state: &AppState,
    suite: &crate::domain::Suite,
    corpid: &str,
) -> HttpResponse {
    let Ok(corp) = crate::domain::CorpId::parse(corpid) else {
        return wecom_error(StatusCode::OK, 40013, "invalid corpid");
    };
    match super::suite_api::corp_token(state, suite, &corp).await {
        Ok((token, expires_in)) => HttpResponse::Ok().json(serde_json::json!({
            "errcode": 0, "errmsg": "ok", "access_token": token, "expires_in": expires_in,
        })),
        Err(answer) => answer,
    }
}

/// Only plain API paths are forwarded (no `..`, no empty segments), so the
/// proxy cannot be steered outside `/cgi-bin/`.
pub(super) fn safe_api_path(path: &str) -> bool {
    !path.is_empty()
        && path.len() <= 256
        && path.split('/').all(|seg| {
            !seg.is_empty()
                && seg != "."
                && seg != ".."
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
        })
}

#[utoipa::path(method(get, post), path = "/puppetWxkfManager/wxkfRequestProxy/{path}", tag = "tokens", params(("path" = String, Path, description = "WeCom API path under /cgi-bin/: segments of [A-Za-z0-9_.-], none of them . or ..", pattern = r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}(/[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}){0,7}$")), responses((status = 200, description = "WeCom's own status, content type and body"), (status = 400, description = "Not a plain API path ({errcode: 40058})"), (status = 413, description = "Body over 20 MiB"), (status = 502, description = "WeCom unreachable")))]
async fn proxy(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> HttpResponse {
    // Read by name: under `/s/{secret}/...` there is a second path parameter.
    let path = req.match_info().query("path").to_owned();
    if !safe_api_path(&path) {
        return wecom_error(StatusCode::BAD_REQUEST, 40058, "invalid API path");
    }
    let mut url = format!("{}/cgi-bin/{}", state.config.wecom_api_base, path.as_str());
    if !req.query_string().is_empty() {
        url.push('?');
        url.push_str(req.query_string());
    }
    let Ok(method) = reqwest::Method::from_bytes(req.method().as_str().as_bytes()) else {
        return wecom_error(StatusCode::METHOD_NOT_ALLOWED, 405, "method not allowed");
    };
    let mut upstream = state.upstream.request(method, url);
    if let Some(ct) = req.headers().get("content-type") {
        upstream = upstream.header("content-type", ct.as_bytes());
    }
    if req.method() == actix_web::http::Method::POST {
        match read_proxy_body(&state, payload).await {
            Ok(body) => upstream = upstream.body(body),
            Err(refused) => return refused,
        }
    }
    let answer = match upstream.send().await {
        Ok(resp) => read_answer(resp, PROXY_BODY_LIMIT).await,
        Err(e) => return unreachable(&e),
    };
    match answer {
        Ok(answer) => {
            invalidate_rejected_token(&state, req.query_string(), &answer).await;
            answer.into_response()
        }
        Err(response) => response,
    }
}

/// A proxied request's body, within the cap and the body timeout; or the
/// answer that refuses it, in the WeCom/WeChat error shape.
pub(super) async fn read_proxy_body(
    state: &AppState,
    payload: web::Payload,
) -> Result<actix_web::web::Bytes, HttpResponse> {
    read_limited(payload, PROXY_BODY_LIMIT, state.config.body_timeout)
        .await
        .map_err(|e| match e {
            BodyError::TooLarge(_) => {
                wecom_error(StatusCode::PAYLOAD_TOO_LARGE, 413, "request body too large")
            }
            BodyError::Read => wecom_error(
                StatusCode::BAD_REQUEST,
                400,
                "could not read the request body",
            ),
            BodyError::Timeout => wecom_error(
                StatusCode::REQUEST_TIMEOUT,
                408,
                "request body not received in time",
            ),
        })
}

/// WeCom says the token we issued is invalid (40014) or expired (42001):
/// drop exactly that token so the next getToken fetches a new one.
async fn invalidate_rejected_token(state: &AppState, query: &str, answer: &Answer) {
    let Some(token) = param(query, "access_token").filter(|t| !t.is_empty()) else {
        return;
    };
    let errcode = serde_json::from_slice::<serde_json::Value>(&answer.body)
        .ok()
        .and_then(|v| v["errcode"].as_i64());
    if matches!(errcode, Some(40014 | 42001)) {
        match state.tokens.invalidate(&token).await {
            Ok(n) => tracing::info!(
                errcode,
                dropped = n,
                "WeCom rejected an access token; dropped it"
            ),
            Err(e) => tracing::warn!(error = %e, "could not drop a rejected access token"),
        }
    }
}

/// WeCom's answer, read within a size cap.
pub(super) struct Answer {
    pub status: StatusCode,
    pub content_type: Option<actix_web::http::header::HeaderValue>,
    pub body: Vec<u8>,
}

impl Answer {
    /// Pass WeCom's status, content type and body back.
    pub(super) fn into_response(self) -> HttpResponse {
        let mut out = HttpResponse::build(self.status);
        if let Some(ct) = self.content_type {
            out.insert_header((actix_web::http::header::CONTENT_TYPE, ct));
        }
        out.body(self.body)
    }
}

pub(super) async fn read_answer(
    mut resp: reqwest::Response,
    limit: usize,
) -> Result<Answer, HttpResponse> {
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| actix_web::http::header::HeaderValue::from_bytes(v.as_bytes()).ok());
    let mut body = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(c)) if body.len() + c.len() <= limit => body.extend_from_slice(&c),
            Ok(Some(_)) => {
                return Err(wecom_error(
                    StatusCode::BAD_GATEWAY,
                    -1,
                    "WeCom answer too large",
                ))
            }
            Ok(None) => break,
            Err(e) => return Err(unreachable(&e)),
        }
    }
    Ok(Answer {
        status,
        content_type,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::safe_api_path;

    #[test]
    fn only_plain_api_paths_are_forwarded() {
        assert!(safe_api_path("kf/sync_msg"));
        assert!(safe_api_path("media/get"));
        for bad in ["", "../x", "kf//x", "kf/../../x", "kf/%2e%2e", "a b"] {
            assert!(!safe_api_path(bad), "{bad}");
        }
    }
}
