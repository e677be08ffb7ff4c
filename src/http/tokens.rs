//! getToken and the WeCom API proxy (API.md §1): answers in WeCom's own
//! `{errcode, errmsg, ...}` shape, also when WeCom cannot be reached.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};

use super::body::{read_limited, BodyError};
use super::query::param;
use super::AppState;

/// Proxied requests and answers (media included) stay under this.
const PROXY_BODY_LIMIT: usize = 20 * 1024 * 1024;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/getToken", web::get().to(get_token))
        .route("/wxkfRequestProxy/{path:.*}", web::get().to(proxy))
        .route("/wxkfRequestProxy/{path:.*}", web::post().to(proxy));
}

fn wecom_error(status: StatusCode, errcode: i64, errmsg: &str) -> HttpResponse {
    HttpResponse::build(status).json(serde_json::json!({"errcode": errcode, "errmsg": errmsg}))
}

fn unreachable(e: &reqwest::Error) -> HttpResponse {
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

async fn get_token(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    let q = req.query_string();
    let Some(corpid) = param(q, "corpid").filter(|v| !v.is_empty()) else {
        return wecom_error(StatusCode::BAD_REQUEST, 41002, "corpid missing");
    };
    let Some(corpsecret) = param(q, "corpsecret").filter(|v| !v.is_empty()) else {
        return wecom_error(StatusCode::BAD_REQUEST, 41004, "corpsecret missing");
    };
    let upstream = state
        .upstream
        .get(&state.config.access_token_url)
        .query(&[
            ("corpid", corpid.as_str()),
            ("corpsecret", corpsecret.as_str()),
        ])
        .send()
        .await;
    match upstream {
        Ok(resp) => relay(resp, 64 * 1024).await,
        Err(e) => unreachable(&e),
    }
}

/// Only plain API paths are forwarded (no `..`, no empty segments), so the
/// proxy cannot be steered outside `/cgi-bin/`.
fn safe_api_path(path: &str) -> bool {
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

async fn proxy(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
) -> HttpResponse {
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
        match read_limited(payload, PROXY_BODY_LIMIT).await {
            Ok(body) => upstream = upstream.body(body),
            Err(BodyError::TooLarge(_)) => {
                return wecom_error(StatusCode::PAYLOAD_TOO_LARGE, 413, "request body too large")
            }
            Err(BodyError::Read) => {
                return wecom_error(
                    StatusCode::BAD_REQUEST,
                    400,
                    "could not read the request body",
                )
            }
        }
    }
    match upstream.send().await {
        Ok(resp) => relay(resp, PROXY_BODY_LIMIT).await,
        Err(e) => unreachable(&e),
    }
}

/// Pass WeCom's status, content type and body back, within a size cap.
async fn relay(mut resp: reqwest::Response, limit: usize) -> HttpResponse {
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let content_type = resp.headers().get("content-type").cloned();
    let mut body = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(c)) if body.len() + c.len() <= limit => body.extend_from_slice(&c),
            Ok(Some(_)) => {
                return wecom_error(StatusCode::BAD_GATEWAY, -1, "WeCom answer too large")
            }
            Ok(None) => break,
            Err(e) => return unreachable(&e),
        }
    }
    let mut out = HttpResponse::build(status);
    if let Some(ct) = content_type {
        out.insert_header(("content-type", ct.as_bytes()));
    }
    out.body(body)
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
