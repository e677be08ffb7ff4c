//! `REGISTER_SECRET`: when set, the puppet-facing routes answer only under
//! `/s/{secret}/puppetWxkfManager/...`, so an operator hands puppets
//! `PUPPET_WXKF_MANAGER_ENDPOINT=http://host:7777/s/<secret>` and unmodified
//! puppets keep working, while strangers cannot register or read anything.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, Error};
use subtle::ConstantTimeEq;

use super::error::PuppetApiError;
use super::AppState;

fn configured_secret(req: &ServiceRequest) -> Option<String> {
    req.app_data::<web::Data<AppState>>().and_then(|s| {
        s.config
            .register_secret
            .as_ref()
            .map(|s| s.expose().to_owned())
    })
}

/// The bare `/puppetWxkfManager/...` paths: refused when a secret is set.
pub async fn bare_paths(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    if configured_secret(&req).is_some() {
        return Err(PuppetApiError::Forbidden(
            "this manager requires its registration secret path",
        )
        .into());
    }
    next.call(req).await
}

/// The `/s/{secret}/puppetWxkfManager/...` paths: served only with the right secret.
pub async fn secret_paths(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let Some(expected) = configured_secret(&req) else {
        return Err(PuppetApiError::NotFound("no registration secret is configured").into());
    };
    let presented = req.match_info().get("register_secret").unwrap_or("");
    if !bool::from(presented.as_bytes().ct_eq(expected.as_bytes())) {
        return Err(PuppetApiError::Forbidden("wrong registration secret").into());
    }
    next.call(req).await
}
