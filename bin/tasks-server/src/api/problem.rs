//! Every error the API returns, and its RFC 9457 `application/problem+json` form. The one
//! place where failures become HTTP statuses.

use actix_web::body::{BoxBody, EitherBody, MessageBody};
use actix_web::dev::ServiceResponse;
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::ErrorHandlerResponse;
use actix_web::{HttpMessage, HttpResponse, ResponseError};
use serde::Serialize;
use tasks_domain::{DomainError, FieldError, RepositoryError};

use tasks_telemetry::http::RequestId;

/// The media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// An RFC 9457 problem document.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// A URI identifying the problem type (`about:blank` when the status says it all).
    #[serde(rename = "type")]
    pub kind: String,
    /// Short summary of the problem type.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong in this occurrence.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Invalid fields, for validation problems.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<super::openapi::FieldErrorSchema>)]
    pub errors: Vec<FieldError>,
    /// The request id, to find the request in the logs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// An API failure.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A domain or storage failure.
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// The body is not valid JSON.
    #[error("malformed JSON: {0}")]
    MalformedJson(String),
    /// The body's media type is not accepted.
    #[error("unsupported media type; send {0}")]
    UnsupportedMediaType(&'static str),
    /// The path id is not a UUID.
    #[error("malformed task id: {0}")]
    MalformedId(String),
    /// A header is invalid.
    #[error("invalid {0} header")]
    BadHeader(&'static str),
    /// The idempotency key was used with a different request.
    #[error("this Idempotency-Key was used for a different request")]
    IdempotencyMismatch,
    /// Another request with this idempotency key is being processed, or was answered an
    /// instant ago; either way a retry gets (or replays) its answer.
    #[error(
        "a request with this Idempotency-Key is being processed or was just answered; retry to get its response"
    )]
    IdempotencyInFlight,
    /// No route matches the path.
    #[error("no such resource")]
    NoSuchResource,
    /// The route exists, but not for this method; the value lists the allowed ones.
    #[error("allowed methods: {0}")]
    MethodNotAllowed(&'static str),
    /// No credentials, bad credentials, a missing scope, or an identity provider that
    /// cannot be asked (RFC 6750 statuses and challenges).
    #[error(transparent)]
    Auth(#[from] tasks_auth::AuthError),
    /// The request body is larger than `http.max_body_bytes`.
    #[error("the request body is larger than {0} bytes")]
    BodyTooLarge(usize),
    /// The request body arrived too slowly.
    #[error("the request body was not received within {0} ms")]
    BodyTimeout(u64),
    /// The request body is compressed; the API accepts only identity bodies.
    #[error(
        "compressed request bodies are not accepted (Content-Encoding: {0}); send the body uncompressed"
    )]
    EncodedBody(String),
}

impl ApiError {
    fn kind(&self) -> &'static str {
        match self {
            Self::Domain(DomainError::Validation(_)) => "urn:problem-type:tasks:validation",
            Self::Domain(DomainError::InvalidQuery(_)) => "urn:problem-type:tasks:invalid-query",
            Self::Domain(DomainError::PreconditionFailed) => "urn:problem-type:tasks:stale-version",
            Self::Domain(DomainError::Repository(RepositoryError::Unavailable(_))) => {
                "urn:problem-type:tasks:database-unavailable"
            }
            Self::IdempotencyMismatch => "urn:problem-type:tasks:idempotency-key-reused",
            Self::IdempotencyInFlight => "urn:problem-type:tasks:idempotency-key-in-flight",
            Self::Auth(tasks_auth::AuthError::InsufficientScope { .. }) => {
                "urn:problem-type:tasks:insufficient-scope"
            }
            Self::Auth(tasks_auth::AuthError::Unavailable { .. }) => {
                "urn:problem-type:tasks:identity-provider-unavailable"
            }
            Self::Auth(_) => "urn:problem-type:tasks:unauthenticated",
            _ => "about:blank",
        }
    }

    fn field_errors(&self) -> Vec<FieldError> {
        match self {
            Self::Domain(DomainError::Validation(e) | DomainError::InvalidQuery(e)) => e.clone(),
            _ => Vec::new(),
        }
    }

    fn detail(&self) -> Option<String> {
        match self {
            // Never describe internals to clients; the log has the cause chain.
            Self::Domain(DomainError::Repository(RepositoryError::Other(_))) => None,
            Self::Domain(DomainError::Repository(RepositoryError::Unavailable(_))) => {
                Some("the database is unavailable; retry later".to_owned())
            }
            other => Some(other.to_string()),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::Domain(e) => match e {
                DomainError::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
                DomainError::InvalidQuery(_) => StatusCode::BAD_REQUEST,
                DomainError::NotFound => StatusCode::NOT_FOUND,
                DomainError::PreconditionFailed => StatusCode::PRECONDITION_FAILED,
                DomainError::Repository(RepositoryError::Unavailable(_)) => {
                    StatusCode::SERVICE_UNAVAILABLE
                }
                DomainError::Repository(RepositoryError::Other(_)) => {
                    StatusCode::INTERNAL_SERVER_ERROR
                }
            },
            Self::MalformedJson(_) | Self::MalformedId(_) | Self::BadHeader(_) => {
                StatusCode::BAD_REQUEST
            }
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::IdempotencyMismatch => StatusCode::UNPROCESSABLE_ENTITY,
            Self::IdempotencyInFlight => StatusCode::CONFLICT,
            Self::NoSuchResource => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::Auth(error) => error.status(),
            Self::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::EncodedBody(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        }
    }

    fn error_response(&self) -> HttpResponse<BoxBody> {
        let status = self.status_code();
        if status.is_server_error() {
            tracing::error!(error = %error_chain(self), "request failed");
        }
        let mut response =
            problem_response(status, self.kind(), self.detail(), self.field_errors());
        if let Self::Auth(error) = self {
            let challenge = error
                .www_authenticate()
                .and_then(|value| HeaderValue::from_str(&value).ok());
            if let Some(challenge) = challenge {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, challenge);
            }
            let retry_after = error
                .retry_after_header()
                .and_then(|value| HeaderValue::from_str(&value).ok());
            if let Some(retry_after) = retry_after {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, retry_after);
            }
        } else if status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if let Self::EncodedBody(_) = self {
            response.headers_mut().insert(
                header::ACCEPT_ENCODING,
                HeaderValue::from_static("identity"),
            );
        }
        if let Self::BodyTimeout(_) = self {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if let Self::MethodNotAllowed(allow) = self {
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        response
    }
}

/// `error: cause: cause…`, for logs.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let next = cause.to_string();
        if !text.ends_with(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = cause.source();
    }
    text
}

/// A problem response. The request id is added by [`problem_for_any_error`].
fn problem_response(
    status: StatusCode,
    kind: &str,
    detail: Option<String>,
    errors: Vec<FieldError>,
) -> HttpResponse {
    let problem = Problem {
        kind: kind.to_owned(),
        title: status.canonical_reason().unwrap_or("Error").to_owned(),
        status: status.as_u16(),
        detail,
        errors,
        request_id: None,
    };
    HttpResponse::build(status)
        .content_type(PROBLEM_JSON)
        .json(problem)
}

/// Turns every error response that is not yet a problem document — actix's own
/// (oversized payload, unmatched route) as well as ours — into one, and stamps the
/// request id into the body of every problem.
pub fn problem_for_any_error<B: MessageBody + 'static>(
    res: ServiceResponse<B>,
) -> actix_web::Result<ErrorHandlerResponse<B>> {
    let status = res.status();
    let request_id = res
        .request()
        .extensions()
        .get::<RequestId>()
        .map(|r| r.as_str().to_owned());
    let is_problem = res
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(PROBLEM_JSON.as_bytes()));
    let (req, response) = res.into_parts();
    let (head, body) = response.into_parts();
    let body = body.boxed();
    Ok(ErrorHandlerResponse::Future(Box::pin(async move {
        let bytes = actix_web::body::to_bytes_limited(body, 64 * 1024)
            .await
            .ok()
            .and_then(Result::ok);
        let mut document: serde_json::Value = match (&bytes, is_problem) {
            (Some(b), true) => serde_json::from_slice(b).unwrap_or_default(),
            _ => serde_json::Value::Null,
        };
        if !document.is_object() {
            let detail = bytes
                .filter(|b| !b.is_empty() && status.is_client_error())
                .map(|b| String::from_utf8_lossy(&b).into_owned());
            document = serde_json::to_value(Problem {
                kind: "about:blank".into(),
                title: status.canonical_reason().unwrap_or("Error").into(),
                status: status.as_u16(),
                detail,
                errors: Vec::new(),
                request_id: None,
            })
            .unwrap_or_default();
        }
        if let (Some(map), Some(id)) = (document.as_object_mut(), request_id) {
            map.insert("request_id".into(), serde_json::Value::String(id));
        }
        let mut rebuilt = head.set_body(BoxBody::new(
            serde_json::to_vec(&document).unwrap_or_default(),
        ));
        rebuilt
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        rebuilt.headers_mut().remove(header::CONTENT_LENGTH);
        let rebuilt: HttpResponse<EitherBody<B>> = rebuilt.map_into_right_body();
        Ok(ServiceResponse::new(req, rebuilt))
    })))
}
