//! The server's errors: stable JSON `{code, message}` with an HTTP status.
//!
//! `code` is a stable, machine-readable kebab-case word; `message` is a sentence for people that
//! says what to do. Internal details (file system paths, database errors, backtraces) are
//! logged, never sent: a failure the caller cannot act on is `internal` with a generic message.

use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// The body of every error response.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// Stable, machine-readable: `unauthorized`, `forbidden`, `not-found`, `unknown-action`,
    /// `bad-request`, `payload-too-large`, `unsupported-media-type`, `method-not-allowed`,
    /// `conversation-ended`, `rejected`, `internal`, `shutting-down`.
    #[schema(example = "unknown-action")]
    pub code: String,
    /// What went wrong and what to do, for people.
    #[schema(example = "no action named \"order-stat\"; GET /v1/actions lists them")]
    pub message: String,
}

/// An error response.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The body.
    pub body: ErrorBody,
}

impl ApiError {
    /// An error with this status, code and message.
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            body: ErrorBody {
                code: code.to_string(),
                message: message.into(),
            },
        }
    }

    /// 400 `bad-request`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad-request", message)
    }

    /// 404 `unknown-action`.
    pub fn unknown_action(name: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "unknown-action",
            format!("no action named {name:?}; GET /v1/actions lists them"),
        )
    }

    /// 500 `internal`: `detail` is logged, not sent.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!("internal error: {detail}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the server failed to handle this request; the operator's log has the details",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.status, axum::Json(self.body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            JsonRejection::MissingJsonContentType(_) => Self::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "send the body as JSON with Content-Type: application/json",
            ),
            JsonRejection::BytesRejection(_)
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE =>
            {
                Self::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload-too-large",
                    "the body is larger than this endpoint takes",
                )
            }
            other => {
                Self::bad_request(format!("the body is not valid here: {}", other.body_text()))
            }
        }
    }
}

impl From<crate::conversations::StoreError> for ApiError {
    fn from(e: crate::conversations::StoreError) -> Self {
        use crate::conversations::StoreError as E;
        match e {
            E::InvalidId { .. } => Self::bad_request(e.to_string()),
            E::NotFound(_) => Self::new(StatusCode::NOT_FOUND, "not-found", e.to_string()),
            E::Ended(_) => Self::new(StatusCode::CONFLICT, "conversation-ended", e.to_string()),
            other => Self::internal(other),
        }
    }
}

/// A JSON body whose rejections are [`ApiError`]s (axum's own are plain text).
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<S, T> axum::extract::FromRequest<S> for ApiJson<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        let axum::Json(value) = axum::Json::<T>::from_request(req, state).await?;
        Ok(Self(value))
    }
}
