//! The request body, read with the limits a public API needs: a size cap checked on the
//! bytes as they arrive (never after inflating them: compressed bodies are refused, so a
//! small request cannot make the server allocate a large one), and a deadline on the
//! whole read, so a client sending its body slowly cannot hold a worker's connection.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use actix_web::http::header;
use actix_web::web::{Bytes, BytesMut};
use actix_web::{FromRequest, HttpRequest, dev::Payload};
use futures_util::StreamExt;

use super::Limits;
use super::problem::ApiError;

/// The raw bytes of a request body, within [`Limits`].
#[derive(Debug)]
pub struct Body(pub Bytes);

impl FromRequest for Body {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(request: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let limits = request.app_data::<Limits>().copied().unwrap_or_default();
        let encoding = request
            .headers()
            .get(header::CONTENT_ENCODING)
            .map(|value| value.to_str().unwrap_or("(not text)").trim().to_owned())
            .filter(|value| !value.eq_ignore_ascii_case("identity"));
        let declared = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse::<usize>().ok());
        let mut payload = payload.take();
        Box::pin(async move {
            if let Some(encoding) = encoding {
                return Err(ApiError::EncodedBody(encoding));
            }
            if declared.is_some_and(|length| length > limits.max_body_bytes) {
                return Err(ApiError::BodyTooLarge(limits.max_body_bytes));
            }
            let read = async {
                let mut body = BytesMut::with_capacity(declared.unwrap_or(0));
                while let Some(chunk) = payload.next().await {
                    let chunk = chunk
                        .map_err(|_| ApiError::MalformedJson("the body ended early".into()))?;
                    if body.len() + chunk.len() > limits.max_body_bytes {
                        return Err(ApiError::BodyTooLarge(limits.max_body_bytes));
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(Body(body.freeze()))
            };
            let deadline = Duration::from_millis(limits.body_timeout_ms);
            tokio::time::timeout(deadline, read)
                .await
                .map_err(|_| ApiError::BodyTimeout(limits.body_timeout_ms))?
        })
    }
}
