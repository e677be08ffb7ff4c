//! The HTTP surface: one module per resource, errors mapped in `error.rs`.

mod admin;
mod admin_auth;
mod admin_channels;
pub mod admin_components;
pub mod admin_providers;
mod body;
mod callback;
mod component;
mod component_api;
mod error;
mod health;
mod openapi;
mod overview;
mod provider_api;
mod provider_push;
pub mod puppets;
pub mod query;
mod rate_limit;
mod schemas;
mod secret_path;
mod suite;
mod suite_api;
mod tokens;
mod wechat;
mod wechat_api;

use std::sync::Arc;

use actix_web::middleware::from_fn;
use actix_web::web;

use crate::clock::Clock;
use crate::config::Config;
use crate::credentials::CredentialCache;
use crate::delivery::DispatcherHandle;
use crate::store::Store;

pub use error::{CallbackError, PuppetApiError};
pub use rate_limit::RateLimiter;

/// Everything a handler needs, shared by all workers.
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub credentials: Arc<CredentialCache>,
    /// Apps, subscriptions, operator-added corp credentials.
    pub directory: Arc<crate::directory::Directory>,
    pub dispatcher: DispatcherHandle,
    pub clock: Arc<dyn Clock>,
    pub config: Arc<Config>,
    /// For the WeCom API proxy.
    pub upstream: reqwest::Client,
    pub tokens: Arc<crate::tokens::TokenService>,
    /// Suites' tokens (§7).
    pub providers: Arc<crate::providers::ProviderService>,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Where registrations may point (the delivery client uses the same).
    pub endpoint_guard: crate::delivery::EndpointGuard,
    /// Register and deregister requests per client address; `None`: no limit.
    pub register_limit: Option<rate_limit::RateLimiter>,
}

impl AppState {
    /// A JSON body of at most 16 KiB (an operator's or a puppet's request),
    /// of the shape `T`; anything else is 400 or 413.
    pub(crate) async fn json_body<T: serde::de::DeserializeOwned>(
        &self,
        payload: web::Payload,
    ) -> Result<T, error::PuppetApiError> {
        let body = body::read_limited(payload, 16 * 1024, self.config.body_timeout).await?;
        serde_json::from_slice(&body).map_err(|_| {
            error::PuppetApiError::BadRequest(
                "body is not a JSON object of the expected shape".into(),
            )
        })
    }
}

/// The old manager's success answer: `{"code": 0, "message": "success"}`.
pub(crate) fn ok() -> actix_web::HttpResponse {
    actix_web::HttpResponse::Ok().json(serde_json::json!({"code": 0, "message": "success"}))
}

/// Every path is one resource (a method it does not serve is 405, not 404).
pub fn routes(cfg: &mut web::ServiceConfig) {
    // WeCom's callbacks first: the hot path matches before any other pattern is tried.
    cfg.configure(callback::routes)
        .configure(wechat_api::routes)
        .configure(wechat::routes)
        .configure(suite::routes)
        .configure(suite_api::routes)
        .configure(component::routes)
        .configure(component_api::routes)
        .service(web::resource("/healthz").get(health::healthz))
        .service(web::resource("/readyz").get(health::readyz))
        .service(web::resource("/metrics").get(health::metrics))
        .service(
            web::scope("/puppetWxkfManager")
                .wrap(from_fn(secret_path::bare_paths))
                .configure(puppets::routes)
                .configure(tokens::routes),
        )
        .service(
            web::scope("/s/{register_secret}/puppetWxkfManager")
                .wrap(from_fn(secret_path::secret_paths))
                .configure(puppets::routes)
                .configure(tokens::routes),
        )
        .service(web::resource(["/admin/", "/admin"]).get(admin::dashboard))
        .service(web::resource("/admin/uplot.js").get(admin::uplot_js))
        .service(web::resource("/admin/uplot.css").get(admin::uplot_css))
        .service(web::resource("/admin/api/openapi.json").get(openapi::openapi_json))
        .service(
            web::scope("/admin/api")
                .wrap(from_fn(admin_auth::require_admin_token))
                .configure(admin::routes),
        );
}
