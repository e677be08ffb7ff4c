//! Reading a request body with a hard size cap, so an oversized body is
//! refused (413) before it is buffered.

use actix_web::web::{Bytes, BytesMut, Payload};
use futures_util::StreamExt;

#[derive(Debug)]
pub enum BodyError {
    TooLarge(usize),
    Read,
}

pub async fn read_limited(mut payload: Payload, limit: usize) -> Result<Bytes, BodyError> {
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
