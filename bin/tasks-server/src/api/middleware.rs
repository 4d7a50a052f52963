//! Request correlation and connection draining.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::ConnectionType;
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{HttpMessage, web};

/// The correlation header.
pub static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The request id of the current request (echoed from the client when acceptable).
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// Set once shutdown begins; every response then asks the client to close its
/// connection, so keep-alive connections do not hold the drain open.
#[derive(Debug, Clone, Default)]
pub struct Draining(pub Arc<AtomicBool>);

fn acceptable(id: &HeaderValue) -> Option<String> {
    let text = id.to_str().ok()?;
    let ok = (1..=128).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_graphic());
    ok.then(|| text.to_owned())
}

/// Assigns or echoes `X-Request-Id` and marks responses `Connection: close` while draining.
pub async fn correlate(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody + 'static>, actix_web::Error> {
    let id = req
        .headers()
        .get(&REQUEST_ID)
        .and_then(acceptable)
        .unwrap_or_else(|| uuid::Uuid::now_v7().simple().to_string());
    req.extensions_mut().insert(RequestId(id.clone()));
    let draining = req
        .app_data::<web::Data<Draining>>()
        .is_some_and(|d| d.0.load(Ordering::Relaxed));
    let mut res = next.call(req).await?;
    if let Ok(value) = HeaderValue::from_str(&id) {
        res.headers_mut().insert(REQUEST_ID.clone(), value);
    }
    if draining {
        res.response_mut()
            .head_mut()
            .set_connection_type(ConnectionType::Close);
    }
    Ok(res)
}
