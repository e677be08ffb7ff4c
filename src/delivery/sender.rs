//! One HTTP attempt: to a puppet, in the shape the old manager used (API.md
//! §3) plus our delivery id and attempt headers; or to a subscriber, signed
//! as Standard Webhooks says (§6.3).

use std::time::Duration;

use super::guard::EndpointGuard;
use crate::domain::{EndpointRefusal, EndpointUrl, Subscription};
use crate::store::{Delivery, PayloadKind};

pub const DELIVERY_ID_HEADER: &str = "X-Wxkf-Delivery-Id";
pub const ATTEMPT_HEADER: &str = "X-Wxkf-Attempt";

/// Why an attempt failed, and the puppet's hint of when to come back.
#[derive(Debug, Clone)]
pub struct SendFailure {
    pub error: String,
    pub retry_after: Option<Duration>,
    /// No connection could be made (refused, reset before an answer, or the
    /// connect timed out): what a stopped container looks like.
    pub unreachable: bool,
}

#[derive(Clone)]
pub struct Sender {
    client: reqwest::Client,
    guard: EndpointGuard,
}

impl Sender {
    /// `max_concurrent`: the most attempts in flight at once, and so the
    /// most connections one host can use; that many stay open when idle, so
    /// that endpoints sharing a host (subscriptions of one system, puppets on
    /// one machine) do not open a new connection for each attempt. A
    /// connection idle for 90 s is closed.
    pub fn new(
        timeout: Duration,
        max_concurrent: usize,
        guard: EndpointGuard,
    ) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            // Every address a name resolves to passes the endpoint policy.
            .dns_resolver(std::sync::Arc::new(guard.clone()))
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            // A puppet endpoint is where events go; a redirect would send them elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(max_concurrent)
            .pool_idle_timeout(Duration::from_secs(90))
            .build()?;
        Ok(Self { client, guard })
    }

    /// One attempt to a puppet, in the old manager's shape (§3).
    pub async fn send(
        &self,
        event: &Delivery,
        endpoint: &EndpointUrl,
        attempt: u32,
    ) -> Result<(), SendFailure> {
        self.check(endpoint)?;
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
        let request = request
            .header(DELIVERY_ID_HEADER, event.id.as_str())
            .header(ATTEMPT_HEADER, attempt.to_string())
            .body(event.body.clone());
        post(request, "puppet").await
    }

    /// One attempt to a subscriber (§6.3): the event's JSON, signed as
    /// Standard Webhooks says, at `now_secs`.
    pub async fn send_webhook(
        &self,
        delivery: &Delivery,
        body: &[u8],
        subscription: &Subscription,
        attempt: u32,
        now_secs: i64,
    ) -> Result<(), SendFailure> {
        self.check(&subscription.endpoint)?;
        let signature = subscription
            .secret
            .sign(delivery.id.as_str(), now_secs, body);
        let request = self
            .client
            .post(subscription.endpoint.as_str())
            .header("content-type", "application/json")
            .header("webhook-id", delivery.id.as_str())
            .header("webhook-timestamp", now_secs.to_string())
            .header("webhook-signature", signature)
            .header(ATTEMPT_HEADER, attempt.to_string())
            .body(body.to_vec());
        post(request, "subscriber").await
    }

    fn check(&self, endpoint: &EndpointUrl) -> Result<(), SendFailure> {
        self.guard
            .check_url(endpoint.url())
            .map_err(|refusal| SendFailure {
                error: format!("endpoint refused: {refusal}"),
                retry_after: None,
                unreachable: false,
            })
    }
}

/// Send, and read what the answer means: any 2xx delivered; a 429 or 503
/// may say when to come back.
async fn post(request: reqwest::RequestBuilder, who: &str) -> Result<(), SendFailure> {
    let response = request.send().await.map_err(|e| {
        let error = describe(&e);
        SendFailure {
            unreachable: e.is_connect() && refusal(&e).is_none(),
            error,
            retry_after: None,
        }
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
        error: format!("{who} answered HTTP {}", status.as_u16()),
        retry_after,
        unreachable: false,
    })
}

/// The endpoint policy's refusal, when the guard refused the connection.
fn refusal(e: &reqwest::Error) -> Option<&EndpointRefusal> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if let Some(refusal) = c.downcast_ref::<EndpointRefusal>() {
            return Some(refusal);
        }
        cause = c.source();
    }
    None
}

fn describe(e: &reqwest::Error) -> String {
    // A refusal by the guard arrives as a connect error; say which and why.
    if let Some(refusal) = refusal(e) {
        return format!("endpoint refused: {refusal}");
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
