//! Connection draining.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::ConnectionType;
use actix_web::middleware::Next;
use actix_web::web;

/// Set once shutdown begins; every response then asks the client to close its
/// connection, so keep-alive connections do not hold the drain open.
#[derive(Debug, Clone, Default)]
pub struct Draining(pub Arc<AtomicBool>);

/// Marks responses `Connection: close` while draining.
pub async fn close_when_draining(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody + 'static>, actix_web::Error> {
    let draining = req
        .app_data::<web::Data<Draining>>()
        .is_some_and(|d| d.0.load(Ordering::Relaxed));
    let mut res = next.call(req).await?;
    if draining {
        res.response_mut()
            .head_mut()
            .set_connection_type(ConnectionType::Close);
    }
    Ok(res)
}
