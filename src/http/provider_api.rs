//! What a suite's and a component's key holders share (API.md §7): the key
//! check, the answer for a customer's token, and the customers' list.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse};

use super::tokens::wecom_error;
use super::wechat_api::{presented_key, token_or_answer, Refusal};
use super::AppState;
use crate::domain::{Grant, Provider};
use crate::providers::ProviderError;
use crate::store::Providers;
use crate::tokens::TokenAnswer;

/// 401 unless the caller presents a live key of this provider (checked
/// before anything goes upstream).
pub(super) fn holds_key(
    state: &AppState,
    req: &HttpRequest,
    provider: &Provider,
) -> Result<(), Refusal> {
    let directory = state.directory.get();
    if presented_key(req).is_some_and(|k| directory.app_key_valid(&provider.scope(), k)) {
        return Ok(());
    }
    Err(Refusal(
        StatusCode::UNAUTHORIZED,
        match provider {
            Provider::Suite(_) => "a key of this suite is required (Authorization: Bearer <key>)",
            Provider::Component(_) => {
                "a key of this component is required (Authorization: Bearer <key>)"
            }
        },
    ))
}

/// A provider's or customer's token and its seconds left, or the answer to
/// give instead: 404 no grant, 503 no ticket yet, 502 WeChat unreachable,
/// else as an app's token.
#[allow(clippy::result_large_err)]
pub(super) fn provider_token(
    answer: Result<TokenAnswer, ProviderError>,
    whose: &str,
) -> Result<(String, i64), HttpResponse> {
    match answer {
        Ok(answer) => token_or_answer(Ok(answer), whose),
        Err(e @ ProviderError::NoGrant) => {
            Err(wecom_error(StatusCode::NOT_FOUND, 404, &e.to_string()))
        }
        Err(e @ (ProviderError::NoSuiteTicket | ProviderError::NoComponentTicket)) => Err(
            wecom_error(StatusCode::SERVICE_UNAVAILABLE, -1, &e.to_string()),
        ),
        Err(e @ ProviderError::Upstream(_)) => {
            Err(wecom_error(StatusCode::BAD_GATEWAY, -1, &e.to_string()))
        }
        Err(ProviderError::Store(e)) => token_or_answer(Err(e), whose),
    }
}

/// `{access_token, expires_in}` (or `component_access_token`) or the answer to give instead.
pub(super) fn token_answer(
    field: &str,
    answer: Result<TokenAnswer, ProviderError>,
    whose: &str,
) -> HttpResponse {
    match provider_token(answer, whose) {
        Ok((token, expires_in)) => {
            HttpResponse::Ok().json(serde_json::json!({field: token, "expires_in": expires_in}))
        }
        Err(answer) => answer,
    }
}

/// `{items}`: a provider's customers as `view` shows them, never a code.
pub(super) async fn customers<V: serde::Serialize>(
    state: &AppState,
    provider: &Provider,
    view: fn(&Grant) -> V,
) -> HttpResponse {
    match state.store.list_grants(provider).await {
        Ok(grants) => {
            let items: Vec<V> = grants.iter().map(view).collect();
            HttpResponse::Ok().json(serde_json::json!({ "items": items }))
        }
        Err(e) => {
            tracing::error!(error = %e, "store unavailable while listing a provider's customers");
            wecom_error(
                StatusCode::SERVICE_UNAVAILABLE,
                -1,
                "store unavailable, retry later",
            )
        }
    }
}

/// The API refused this token (through a proxy): drop it, and only it, so
/// the next ask fetches another.
pub(super) async fn drop_stale(state: &AppState, stale: Option<String>) {
    if let Some(stale) = stale {
        if let Err(e) = state.providers.invalidate(&stale).await {
            tracing::warn!(error = %e, "could not drop a stale token");
        }
    }
}
