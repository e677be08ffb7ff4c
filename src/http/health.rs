//! `/healthz`: the process answers. `/readyz`: the store answers too.

use std::time::Duration;

use actix_web::{web, HttpResponse};

use super::AppState;

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("ok")
}

pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    match tokio::time::timeout(Duration::from_secs(2), state.store.ping()).await {
        Ok(Ok(())) => HttpResponse::Ok().content_type("text/plain").body("ready"),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness: store unavailable");
            HttpResponse::ServiceUnavailable()
                .content_type("text/plain")
                .body("store unavailable")
        }
        Err(_) => HttpResponse::ServiceUnavailable()
            .content_type("text/plain")
            .body("store did not answer in 2s"),
    }
}
