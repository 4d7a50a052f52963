//! The actix-web extractor: a [`Principal`] as a handler argument.

use actix_web::dev::Payload;
use actix_web::http::header::AUTHORIZATION;
use actix_web::{FromRequest, HttpRequest, web};
use futures_util::future::{Either, LocalBoxFuture, Ready, ready};

use crate::authenticator::{Authenticator, Checked};
use crate::error::AuthError;
use crate::principal::Principal;

/// Extracts the authenticated caller from `Authorization: Bearer <token>`, using the
/// [`Authenticator`] registered as application data (`web::Data<Authenticator>` or a
/// plain `Authenticator`). API tokens and JWTs verified before are answered without
/// boxing a future; only a JWT that needs verifying waits.
///
/// A refusal is an [`AuthError`], which renders itself (RFC 6750 challenge, RFC 9457
/// body); a service that renders errors in one place maps it there instead.
impl FromRequest for Principal {
    type Error = AuthError;
    type Future =
        Either<Ready<Result<Self, AuthError>>, LocalBoxFuture<'static, Result<Self, AuthError>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let authenticator = req
            .app_data::<web::Data<Authenticator>>()
            .map(|data| data.get_ref())
            .or_else(|| req.app_data::<Authenticator>());
        let Some(authenticator) = authenticator else {
            tracing::error!("no Authenticator registered as application data");
            return Either::Left(ready(Err(AuthError::NotConfigured)));
        };
        match authenticator.check_header(req.headers().get_all(AUTHORIZATION)) {
            Checked::Done(answer) => Either::Left(ready(answer)),
            Checked::Verify { token, cache_key } => {
                let authenticator = authenticator.clone();
                Either::Right(Box::pin(async move {
                    authenticator.verify_pending(&token, cache_key).await
                }))
            }
        }
    }
}
