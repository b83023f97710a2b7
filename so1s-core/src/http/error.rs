//! One JSON error body for every failure, with the right status code.

use crate::Error;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::{Stream, StreamExt};
use serde::Serialize;
use std::convert::Infallible;
use warp::http::{header, HeaderValue, StatusCode};
use warp::reply::Response;
use warp::{Filter, Rejection};

/// An error on its way to the client: `{"error": "...", "error_type": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiError {
    /// The status code.
    #[serde(skip)]
    pub status: StatusCode,
    /// What went wrong, for people.
    pub error: String,
    /// A stable name of the kind of error, for programs (and metrics labels).
    pub error_type: &'static str,
}

impl ApiError {
    /// An error with the given status, type and message.
    pub fn new(status: StatusCode, error_type: &'static str, error: impl Into<String>) -> Self {
        Self {
            status,
            error: error.into(),
            error_type,
        }
    }

    /// 400: the body is not JSON or not the JSON expected.
    pub fn bad_request(error: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", error)
    }

    /// 413: the body is over the limit.
    pub fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the request body is larger than {limit} bytes"),
        )
    }

    /// The JSON response.
    pub fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut response = Response::new(body.into());
        *response.status_mut() = self.status;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"so1s\""),
            );
        }
        response
    }
}

impl From<&Error> for ApiError {
    fn from(error: &Error) -> Self {
        let status = match error {
            Error::InvalidInput(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Error::Overloaded { .. } => StatusCode::TOO_MANY_REQUESTS,
            Error::NotReady => StatusCode::SERVICE_UNAVAILABLE,
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::Conflict(_) => StatusCode::CONFLICT,
            Error::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Error::QuotaExceeded(_) => StatusCode::INSUFFICIENT_STORAGE,
            Error::Io { .. } if error.is_disk_full() => StatusCode::INSUFFICIENT_STORAGE,
            Error::Upload(_) => StatusCode::BAD_REQUEST,
            Error::Backend(_) => StatusCode::BAD_GATEWAY,
            Error::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Error::Forbidden(_) => StatusCode::FORBIDDEN,
            Error::Busy(_) => StatusCode::TOO_MANY_REQUESTS,
            Error::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let chain = error.chain();
        if status.is_server_error() && status != StatusCode::SERVICE_UNAVAILABLE {
            // The whole chain, paths included, for the operator; the client reads it with
            // host paths shortened. (503 is the expected answer while a model loads.)
            tracing::warn!(error = %chain, "request failed");
        }
        Self::new(
            status,
            error.error_type(),
            crate::redact::host_paths(&chain),
        )
    }
}

impl From<Error> for ApiError {
    fn from(error: Error) -> Self {
        Self::from(&error)
    }
}

/// Turns a JSON body's parse error into 400 (not JSON) or 422 (JSON of the wrong shape).
pub fn json_error(error: &serde_json::Error) -> ApiError {
    use serde_json::error::Category;
    match error.classify() {
        Category::Data => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation",
            format!("invalid request: {error}"),
        ),
        Category::Syntax | Category::Eof | Category::Io => {
            ApiError::bad_request(format!("the body is not valid JSON: {error}"))
        }
    }
}

impl warp::reject::Reject for ApiError {}

/// Reads the whole body, refusing with 413 anything over `limit` bytes: at once when the
/// `Content-Length` says so, while reading for chunked bodies.
pub fn body_limited(limit: usize) -> impl Filter<Extract = (Bytes,), Error = Rejection> + Clone {
    warp::header::optional::<u64>("content-length")
        .and(warp::body::stream())
        .and_then(move |length, stream| collect_limited(length, stream, limit))
}

async fn collect_limited<B: Buf>(
    length: Option<u64>,
    stream: impl Stream<Item = Result<B, warp::Error>>,
    limit: usize,
) -> Result<Bytes, Rejection> {
    if length.is_some_and(|length| length > limit as u64) {
        return Err(warp::reject::custom(ApiError::too_large(limit)));
    }
    let mut stream = std::pin::pin!(stream);
    let mut body = BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            warp::reject::custom(ApiError::bad_request(format!("reading the body: {e}")))
        })?;
        if body.len() + chunk.remaining() > limit {
            return Err(warp::reject::custom(ApiError::too_large(limit)));
        }
        body.put(chunk);
    }
    Ok(body.freeze())
}

/// The `recover` of every server: any rejection becomes the JSON error body.
pub async fn recover(rejection: Rejection) -> Result<Response, Infallible> {
    let error = if let Some(error) = rejection.find::<ApiError>() {
        error.clone()
    } else if rejection.is_not_found() {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
    } else if rejection.find::<warp::reject::MethodNotAllowed>().is_some() {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "this route does not take that method",
        )
    } else if rejection.find::<warp::reject::PayloadTooLarge>().is_some() {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "the request body is too large",
        )
    } else if let Some(e) = rejection.find::<warp::reject::InvalidHeader>() {
        ApiError::bad_request(e.to_string())
    } else {
        tracing::warn!(?rejection, "unhandled rejection");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the request could not be handled; the server's log has the details",
        )
    };
    Ok(error.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_kind_has_its_status() {
        for (error, status, error_type) in [
            (Error::InvalidInput("x".into()), 422, "validation"),
            (Error::Overloaded { waiting: 3 }, 429, "overloaded"),
            (Error::NotReady, 503, "not_ready"),
            (Error::Inference("boom".into()), 500, "inference"),
        ] {
            let api = ApiError::from(&error);
            assert_eq!(api.status.as_u16(), status, "{error:?}");
            assert_eq!(api.error_type, error_type);
        }
    }

    #[test]
    fn a_full_disk_is_507_and_other_file_errors_500() {
        use std::io::Write;
        // The operating system's own "no space left on device" (ENOSPC): /dev/full's answer
        // to every write.
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .and_then(|mut file| file.write_all(b"x").and_then(|()| file.flush()))
            .unwrap_err();
        let missing = std::fs::File::open("/nonexistent/so1s").unwrap_err();
        for (source, status, error_type) in
            [(full, 507, "insufficient_storage"), (missing, 500, "io")]
        {
            let error = Error::Io {
                context: "writing the upload".into(),
                source,
            };
            let api = ApiError::from(&error);
            assert_eq!(api.status.as_u16(), status, "{error:?}");
            assert_eq!(api.error_type, error_type);
        }
    }

    #[test]
    fn json_errors_split_into_syntax_and_shape() {
        let syntax = serde_json::from_str::<serde_json::Value>("{").unwrap_err();
        assert_eq!(json_error(&syntax).status, StatusCode::BAD_REQUEST);
        let shape = serde_json::from_str::<Vec<u8>>("\"text\"").unwrap_err();
        assert_eq!(json_error(&shape).status, StatusCode::UNPROCESSABLE_ENTITY);
    }

    #[tokio::test]
    async fn body_limit_applies_with_and_without_content_length() {
        let filter = body_limited(8)
            .map(|body: Bytes| body.len().to_string())
            .recover(recover);
        let ok = warp::test::request().body("12345678").reply(&filter).await;
        assert_eq!(ok.status(), 200);
        assert_eq!(ok.body(), "8");
        let too_large = warp::test::request().body("123456789").reply(&filter).await;
        assert_eq!(too_large.status(), 413);
        let body: serde_json::Value = serde_json::from_slice(too_large.body()).unwrap();
        assert_eq!(body["error_type"], "payload_too_large");
    }
}
