//! One HTTP attempt to a puppet, in the shape the old manager used
//! (API.md §3), plus our delivery id and attempt headers.

use std::time::Duration;

use super::guard::EndpointGuard;
use crate::domain::{EndpointRefusal, EndpointUrl};
use crate::store::{Delivery, PayloadKind};

pub const DELIVERY_ID_HEADER: &str = "X-Wxkf-Delivery-Id";
pub const ATTEMPT_HEADER: &str = "X-Wxkf-Attempt";

/// Why an attempt failed, and the puppet's hint of when to come back.
#[derive(Debug, Clone)]
pub struct SendFailure {
    pub error: String,
    pub retry_after: Option<Duration>,
}

#[derive(Clone)]
pub struct Sender {
    client: reqwest::Client,
    guard: EndpointGuard,
}

impl Sender {
    pub fn new(timeout: Duration, guard: EndpointGuard) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            // Every address a name resolves to passes the endpoint policy.
            .dns_resolver(std::sync::Arc::new(guard.clone()))
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            // A puppet endpoint is where events go; a redirect would send them elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(32)
            .build()?;
        Ok(Self { client, guard })
    }

    pub async fn send(
        &self,
        event: &Delivery,
        endpoint: &EndpointUrl,
        attempt: u32,
    ) -> Result<(), SendFailure> {
        self.guard
            .check_url(endpoint.url())
            .map_err(|refusal| SendFailure {
                error: format!("endpoint refused: {refusal}"),
                retry_after: None,
            })?;
        let request = match event.kind {
            PayloadKind::Xml => {
                let url = format!("{}?{}", endpoint.join("callback"), event.query);
                self.client
                    .post(url)
                    .header("content-type", "application/xml")
            }
            PayloadKind::Json => self
                .client
                .post(endpoint.join("callback/decrypted"))
                .header("content-type", "application/json"),
        };
        let response = request
            .header(DELIVERY_ID_HEADER, &event.id)
            .header(ATTEMPT_HEADER, attempt.to_string())
            .body(event.body.clone())
            .send()
            .await
            .map_err(|e| SendFailure {
                error: describe(&e),
                retry_after: None,
            })?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let retry_after = matches!(status.as_u16(), 429 | 503)
            .then(|| response.headers().get("retry-after"))
            .flatten()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        Err(SendFailure {
            error: format!("puppet answered HTTP {}", status.as_u16()),
            retry_after,
        })
    }
}

fn describe(e: &reqwest::Error) -> String {
    // A refusal by the guard arrives as a connect error; say which and why.
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if let Some(refusal) = c.downcast_ref::<EndpointRefusal>() {
            return format!("endpoint refused: {refusal}");
        }
        cause = c.source();
    }
    if e.is_timeout() {
        "timed out".to_owned()
    } else if e.is_connect() {
        "connection failed".to_owned()
    } else if e.is_redirect() {
        "redirect refused".to_owned()
    } else {
        // The innermost cause, without the URL reqwest adds at the top.
        let mut cause: &dyn std::error::Error = e;
        while let Some(inner) = cause.source() {
            cause = inner;
        }
        format!("request failed: {cause}")
    }
}
