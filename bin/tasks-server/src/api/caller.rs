//! Who is calling: the authenticated principal, as the owner of the tasks it touches, with
//! the scope its operation needs. Every `/v1/*` handler takes a [`Reader`] or a [`Writer`]
//! first, so a request without valid credentials is refused before anything else of it is
//! read.

use std::future::Future;
use std::pin::Pin;

use actix_web::{FromRequest, HttpRequest, dev::Payload};
use tasks_auth::Principal;
use tasks_domain::Owner;

use super::problem::ApiError;

/// The scope that lets a caller read its tasks.
pub const READ_SCOPE: &str = "tasks:read";
/// The scope that lets a caller create, change and delete its tasks.
pub const WRITE_SCOPE: &str = "tasks:write";

/// A caller holding [`READ_SCOPE`], acting on its own tasks.
#[derive(Debug)]
pub struct Reader(pub Owner);

/// A caller holding [`WRITE_SCOPE`], acting on its own tasks.
#[derive(Debug)]
pub struct Writer(pub Owner);

async fn owner_with_scope(request: HttpRequest, scope: &'static str) -> Result<Owner, ApiError> {
    let principal = Principal::extract(&request).await?;
    principal.require(scope)?;
    Owner::new(principal.id()).ok_or(ApiError::BadHeader("Authorization"))
}

type Extracting<T> = Pin<Box<dyn Future<Output = Result<T, ApiError>>>>;

impl FromRequest for Reader {
    type Error = ApiError;
    type Future = Extracting<Self>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        let request = request.clone();
        Box::pin(async move { owner_with_scope(request, READ_SCOPE).await.map(Reader) })
    }
}

impl FromRequest for Writer {
    type Error = ApiError;
    type Future = Extracting<Self>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        let request = request.clone();
        Box::pin(async move { owner_with_scope(request, WRITE_SCOPE).await.map(Writer) })
    }
}
