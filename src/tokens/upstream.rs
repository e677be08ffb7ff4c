//! The upstream calls of the token cache: WeCom's `gettoken` and WeChat's
//! `stable_token`, retried on -1 and on network errors, with their outcome
//! counted by errcode.

use std::time::Duration;

use super::{TokenService, TokenSource};
use crate::domain::Secret;

impl TokenService {
    /// One `gettoken` (or `stable_token`), retried (with backoff) on -1 and
    /// on network errors.
    pub(super) async fn fetch(&self, source: TokenSource<'_>, forced: bool) -> Upstream {
        let mut last = Upstream::Unreachable("no attempt".into());
        for attempt in 0..3u32 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
            }
            last = self.fetch_once(source, forced).await;
            let retry = matches!(&last, Upstream::Unreachable(_))
                || matches!(&last, Upstream::Error { errcode: -1, .. });
            if !retry {
                break;
            }
        }
        last
    }

    async fn fetch_once(&self, source: TokenSource<'_>, forced: bool) -> Upstream {
        let json = |url: String, body: serde_json::Value| {
            self.client
                .post(url)
                .header("content-type", "application/json")
                .body(body.to_string())
        };
        let base = &self.wecom_api_base;
        // The request, and the field of the answer that holds the token.
        let (request, field) = match source {
            TokenSource::Wecom { corpid, corpsecret } => (
                self.client
                    .get(&self.url)
                    .query(&[("corpid", corpid), ("corpsecret", corpsecret)]),
                "access_token",
            ),
            // The stable token: fetching it does not invalidate the one other
            // holders of the AppSecret use (unless forced).
            TokenSource::Wechat { appid, secret } => (
                json(
                    self.stable_url.clone(),
                    serde_json::json!({
                        "grant_type": "client_credential", "appid": appid, "secret": secret,
                        "force_refresh": forced,
                    }),
                ),
                "access_token",
            ),
            TokenSource::Suite {
                suite_id,
                secret,
                ticket,
            } => (
                json(
                    format!("{base}/cgi-bin/service/get_suite_token"),
                    serde_json::json!({
                        "suite_id": suite_id, "suite_secret": secret, "suite_ticket": ticket,
                    }),
                ),
                "suite_access_token",
            ),
            TokenSource::SuiteCorp {
                corpid,
                permanent_code,
                suite_token,
                ..
            } => (
                json(
                    format!("{base}/cgi-bin/service/get_corp_token"),
                    serde_json::json!({"auth_corpid": corpid, "permanent_code": permanent_code}),
                )
                .query(&[("suite_access_token", suite_token)]),
                "access_token",
            ),
            TokenSource::Component {
                component_appid,
                secret,
                ticket,
            } => (
                json(
                    format!(
                        "{}/cgi-bin/component/api_component_token",
                        self.wechat_api_base
                    ),
                    serde_json::json!({
                        "component_appid": component_appid, "component_appsecret": secret,
                        "component_verify_ticket": ticket,
                    }),
                ),
                "component_access_token",
            ),
            TokenSource::Authorizer {
                component_appid,
                appid,
                refresh_token,
                component_token,
                ..
            } => (
                json(
                    format!(
                        "{}/cgi-bin/component/api_authorizer_token",
                        self.wechat_api_base
                    ),
                    serde_json::json!({
                        "component_appid": component_appid, "authorizer_appid": appid,
                        "authorizer_refresh_token": refresh_token,
                    }),
                )
                .query(&[("component_access_token", component_token)]),
                "authorizer_access_token",
            ),
        };
        let sent = request.send().await;
        let body: serde_json::Value = match sent {
            Ok(resp) => match resp.bytes().await.map(|b| serde_json::from_slice(&b)) {
                Ok(Ok(v)) => v,
                _ => return Upstream::Unreachable("answer is not JSON".into()),
            },
            Err(e) if e.is_timeout() => return Upstream::Unreachable("timed out".into()),
            Err(_) => return Upstream::Unreachable("connection failed".into()),
        };
        let errcode = body["errcode"].as_i64().unwrap_or(0);
        self.record_upstream(errcode);
        match (errcode, body[field].as_str()) {
            (0, Some(token)) if !token.is_empty() => Upstream::Token {
                token: Secret::new(token),
                expires_in: body["expires_in"].as_i64().unwrap_or(7200).clamp(1, 86_400),
                rotated: body["authorizer_refresh_token"]
                    .as_str()
                    .filter(|r| !r.is_empty() && *r != refresh_of(&source))
                    .map(Secret::new),
            },
            _ => Upstream::Error {
                errcode: if errcode == 0 { -1 } else { errcode },
                errmsg: body["errmsg"]
                    .as_str()
                    .unwrap_or("no access_token in WeCom's answer")
                    .to_owned(),
            },
        }
    }

    fn record_upstream(&self, errcode: i64) {
        self.metrics
            .token_upstream
            .get_or_create(&crate::metrics::ErrcodeLabels { errcode })
            .inc();
    }
}

/// The refresh token a source was refreshed with, if it has one.
fn refresh_of<'a>(source: &TokenSource<'a>) -> &'a str {
    match *source {
        TokenSource::Authorizer { refresh_token, .. } => refresh_token,
        _ => "",
    }
}

pub(super) enum Upstream {
    Token {
        token: Secret,
        expires_in: i64,
        /// A new refresh token (an authorizer's), to keep from now on.
        rotated: Option<Secret>,
    },
    Error {
        errcode: i64,
        errmsg: String,
    },
    Unreachable(String),
}
