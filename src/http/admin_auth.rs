//! Who may use `/admin/api/`: the bearer `ADMIN_TOKEN`, compared in constant
//! time. Without `ADMIN_TOKEN` the admin API is off for every client,
//! loopback included: behind a reverse proxy on the same host every request
//! arrives from loopback. The CLI opens the store itself and needs no token.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, Error};
use subtle::ConstantTimeEq;

use super::error::PuppetApiError;
use super::AppState;

/// What an operator sees when no token is configured (API and dashboard).
pub const ADMIN_OFF: &str =
    "the admin API is off: set ADMIN_TOKEN (16 or more characters) to enable it";

pub async fn require_admin_token(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let expected = req
        .app_data::<web::Data<AppState>>()
        .and_then(|s| s.config.admin_token.as_ref().map(|t| t.expose().to_owned()));
    let Some(expected) = expected else {
        return Err(PuppetApiError::Forbidden(ADMIN_OFF).into());
    };
    let presented = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or(PuppetApiError::Unauthorized)?;
    if !bool::from(presented.as_bytes().ct_eq(expected.as_bytes())) {
        return Err(PuppetApiError::Forbidden("wrong admin token").into());
    }
    next.call(req).await
}
