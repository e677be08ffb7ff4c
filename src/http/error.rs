//! The one place where errors become HTTP answers.
//!
//! Callback-facing errors are one line of text (WeCom and gateways read the
//! status); puppet-facing errors are `{"code": <status>, "message": ...}`.
//! Internal causes are logged, never shown, and no message carries a secret.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};

use crate::domain::FieldError;
use crate::store::StoreError;
use crate::wecom::ProtocolError;

use super::body::BodyError;

#[derive(Debug, thiserror::Error)]
pub enum CallbackError {
    #[error("{0}")]
    BadRequest(String),
    #[error("body larger than {0} bytes")]
    TooLarge(usize),
    #[error("signature does not match any credential set of this corp")]
    BadSignature,
    #[error("decrypted receiveid is not this corp")]
    WrongReceiveId,
    #[error("no credentials registered for this corp")]
    UnknownCorp,
    #[error("no app registered with this appId")]
    UnknownApp,
    #[error("no suite registered with this suiteId")]
    UnknownSuite,
    #[error("no component registered with this appId")]
    UnknownComponent,
    #[error("the push names another provider than its URL")]
    ForeignProvider,
    #[error("this app accepts encrypted pushes only")]
    EncryptionRequired,
    #[error("store unavailable, retry later")]
    StoreUnavailable(#[source] StoreError),
    #[error("request body not received in time")]
    SlowBody,
}

impl From<ProtocolError> for CallbackError {
    fn from(e: ProtocolError) -> Self {
        match e {
            ProtocolError::Signature => Self::BadSignature,
            ProtocolError::ReceiveId => Self::WrongReceiveId,
            ProtocolError::TooLarge(n) => Self::TooLarge(n),
            other => Self::BadRequest(format!("{other} ({})", other.code())),
        }
    }
}

impl From<StoreError> for CallbackError {
    fn from(e: StoreError) -> Self {
        Self::StoreUnavailable(e)
    }
}

impl From<BodyError> for CallbackError {
    fn from(e: BodyError) -> Self {
        match e {
            BodyError::TooLarge(n) => Self::TooLarge(n),
            BodyError::Read => Self::BadRequest("could not read the request body".into()),
            BodyError::Timeout => Self::SlowBody,
        }
    }
}

impl CallbackError {
    /// Label for logs and metrics.
    pub fn outcome(&self) -> &'static str {
        match self {
            Self::BadRequest(_) | Self::TooLarge(_) | Self::SlowBody => "parse_error",
            Self::BadSignature => "bad_signature",
            Self::WrongReceiveId => "bad_receiveid",
            Self::UnknownCorp => "unknown_corp",
            Self::UnknownApp => "unknown_app",
            Self::UnknownSuite => "unknown_suite",
            Self::UnknownComponent => "unknown_component",
            Self::ForeignProvider => "foreign_provider",
            Self::EncryptionRequired => "encryption_required",
            Self::StoreUnavailable(_) => "store_unavailable",
        }
    }
}

impl ResponseError for CallbackError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BadSignature | Self::WrongReceiveId | Self::ForeignProvider => {
                StatusCode::UNAUTHORIZED
            }
            Self::UnknownCorp | Self::UnknownApp | Self::UnknownSuite | Self::UnknownComponent => {
                StatusCode::NOT_FOUND
            }
            Self::EncryptionRequired => StatusCode::FORBIDDEN,
            Self::StoreUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::SlowBody => StatusCode::REQUEST_TIMEOUT,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let Self::StoreUnavailable(cause) = self {
            tracing::error!(error = %cause, "store unavailable while accepting a callback");
        }
        HttpResponse::build(self.status_code())
            .content_type("text/plain; charset=utf-8")
            .body(self.to_string())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PuppetApiError {
    #[error("{0}")]
    Invalid(#[from] FieldError),
    #[error("{0}")]
    BadRequest(String),
    #[error("body larger than {0} bytes")]
    TooLarge(usize),
    #[error("{0}")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(&'static str),
    #[error("request body not received in time")]
    SlowBody,
    #[error("missing bearer token")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(&'static str),
    /// A configured bound was reached (409).
    #[error("{0}")]
    Limit(String),
    #[error("too many requests from this address; retry after {} s", retry_after_secs(*.0))]
    RateLimited(std::time::Duration),
    #[error("store unavailable, retry later")]
    Store(#[from] StoreError),
}

impl From<BodyError> for PuppetApiError {
    fn from(e: BodyError) -> Self {
        match e {
            BodyError::TooLarge(n) => Self::TooLarge(n),
            BodyError::Read => Self::BadRequest("could not read the request body".into()),
            BodyError::Timeout => Self::SlowBody,
        }
    }
}

impl ResponseError for PuppetApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::Invalid(_) | Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::SlowBody => StatusCode::REQUEST_TIMEOUT,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::Limit(_) => StatusCode::CONFLICT,
            Self::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::Store(StoreError::DuplicateKey) => StatusCode::CONFLICT,
            Self::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let Self::Store(cause) = self {
            tracing::error!(error = %cause, "store error on a puppet request");
        }
        let status = self.status_code();
        let mut response = HttpResponse::build(status);
        if let Self::RateLimited(wait) = self {
            response.insert_header(("retry-after", retry_after_secs(*wait).to_string()));
        }
        response.json(serde_json::json!({
            "code": status.as_u16(),
            "message": self.to_string(),
        }))
    }
}

/// Whole seconds for `Retry-After`, never 0.
fn retry_after_secs(wait: std::time::Duration) -> u64 {
    (wait.as_millis().div_ceil(1000) as u64).max(1)
}
