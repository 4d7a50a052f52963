//! Who is calling: the authenticated principal, as the owner of the tasks it touches, with
//! the scope its operation needs. Every `/v1/*` handler takes a [`Reader`] or a [`Writer`]
//! first, so a request without valid credentials is refused before anything else of it is
//! read.

use actix_web::{FromRequest, HttpRequest, dev::Payload};
use futures_util::future::{Either, LocalBoxFuture, Ready, ready};
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

fn owner_with_scope(principal: &Principal, scope: &'static str) -> Result<Owner, ApiError> {
    principal.require(scope)?;
    Owner::new(principal.id()).ok_or(ApiError::BadHeader("Authorization"))
}

/// API tokens and JWTs verified before are answered at once (a ready future, no box and
/// no request clone); only a JWT that needs verifying waits.
type Extracting<T> =
    Either<Ready<Result<T, ApiError>>, LocalBoxFuture<'static, Result<T, ApiError>>>;

fn extract<T: 'static>(
    request: &HttpRequest,
    payload: &mut Payload,
    scope: &'static str,
    wrap: fn(Owner) -> T,
) -> Extracting<T> {
    match Principal::from_request(request, payload) {
        Either::Left(ready_answer) => Either::Left(ready(
            ready_answer
                .into_inner()
                .map_err(ApiError::from)
                .and_then(|principal| owner_with_scope(&principal, scope))
                .map(wrap),
        )),
        Either::Right(pending) => Either::Right(Box::pin(async move {
            let principal = pending.await?;
            owner_with_scope(&principal, scope).map(wrap)
        })),
    }
}

impl FromRequest for Reader {
    type Error = ApiError;
    type Future = Extracting<Self>;

    fn from_request(request: &HttpRequest, payload: &mut Payload) -> Self::Future {
        extract(request, payload, READ_SCOPE, Reader)
    }
}

impl FromRequest for Writer {
    type Error = ApiError;
    type Future = Extracting<Self>;

    fn from_request(request: &HttpRequest, payload: &mut Payload) -> Self::Future {
        extract(request, payload, WRITE_SCOPE, Writer)
    }
}
