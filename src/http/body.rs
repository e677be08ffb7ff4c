//! Reading a request body with a hard size cap, so an oversized body is
//! refused (413) before it is buffered.

use actix_web::web::{Bytes, BytesMut, Payload};
use std::time::Duration;

use futures_util::StreamExt;

#[derive(Debug)]
pub enum BodyError {
    TooLarge(usize),
    Read,
    Timeout,
}

/// Read the whole body, refusing more than `limit` bytes or a sender slower
/// than `deadline` for the whole body (slow-loris).
pub async fn read_limited(
    payload: Payload,
    limit: usize,
    deadline: Duration,
) -> Result<Bytes, BodyError> {
    tokio::time::timeout(deadline, read_all(payload, limit))
        .await
        .unwrap_or(Err(BodyError::Timeout))
}

async fn read_all(mut payload: Payload, limit: usize) -> Result<Bytes, BodyError> {
    let mut body = BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|_| BodyError::Read)?;
        if body.len() + chunk.len() > limit {
            return Err(BodyError::TooLarge(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}
