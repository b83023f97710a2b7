//! The upload route, `POST /v1/models/{name}/versions`, and receiving an upload: the raw
//! body, or the multipart field `model`, streamed to the store.
//!
//! Bounds: every body must make progress (an idle timeout per chunk); a multipart body may
//! spend at most `max_head_bytes` (preamble, part headers, other fields) before its `model`
//! part begins, and hold at most `max_parts` parts; the archive itself then streams to disk
//! under the store's size limit.

use super::{guard, model_path, with_platform, ApiLimits};
use crate::auth::{Role, Tokens};
use crate::http::ApiError;
use crate::model::ModelName;
use crate::platform::Platform;
use crate::registry::VersionRecord;
use crate::resources::VersionView;
use crate::store::ByteStream;
use crate::{Error, Result};
use bytes::Buf;
use futures::{Stream, StreamExt, TryStreamExt};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use warp::filters::BoxedFilter;
use warp::http::{header, HeaderValue, StatusCode};
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

/// Bounds of a multipart upload before its archive part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MultipartLimits {
    /// Bytes of everything before the `model` part's data.
    pub max_head_bytes: u64,
    /// Parts before and including `model`.
    pub max_parts: usize,
}

impl Default for MultipartLimits {
    fn default() -> Self {
        Self {
            max_head_bytes: 1 << 20,
            max_parts: 8,
        }
    }
}

/// `POST /v1/models/{name}/versions` (deployer): the archive as the raw body or the multipart
/// field `model`, answered with `202` once it is stored.
pub fn routes(
    platform: &Arc<Platform>,
    tokens: &Arc<Tokens>,
    limits: ApiLimits,
) -> BoxedFilter<(Response,)> {
    model_path()
        .and(warp::path("versions"))
        .and(warp::path::end())
        .and(warp::post())
        .and(guard::require(tokens.clone(), Role::Deployer))
        .and(with_platform(platform))
        .and(warp::header::optional::<String>("content-type"))
        .and(idle_body(limits.body_idle_timeout))
        .then(
            move |name: ModelName,
                  platform: Arc<Platform>,
                  content_type: Option<String>,
                  body| async move {
                let received =
                    archive_bytes(content_type.as_deref(), body, limits.multipart).await;
                match received {
                    Ok(bytes) => accepted(platform.upload(&name, bytes).await),
                    Err(e) => ApiError::from(e).into_response(),
                }
            },
        )
        .boxed()
}

/// `202` with the stored version, its `Location` and links.
fn accepted(result: Result<VersionRecord>) -> Response {
    match result {
        Ok(record) => {
            let view = VersionView::new(record);
            let mut response = warp::reply::json(&view).into_response();
            *response.status_mut() = StatusCode::ACCEPTED;
            if let Ok(location) = HeaderValue::from_str(&view.links.this) {
                response.headers_mut().insert(header::LOCATION, location);
            }
            response
        }
        Err(e) => {
            let busy = matches!(e, crate::Error::Busy(_));
            let mut response = ApiError::from(e).into_response();
            if busy {
                // The build queue is full: it drains at a build every few seconds.
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(10));
            }
            response
        }
    }
}

/// The field that holds the archive.
pub const FIELD: &str = "model";

/// A request body as bytes that must keep coming: a gap longer than `idle` ends it with an
/// error.
pub fn idle_limited(
    body: impl Stream<Item = Result<impl Buf + Send + 'static, warp::Error>> + Send + 'static,
    idle: Duration,
) -> ByteStream {
    let body = Box::pin(
        body.map_ok(|mut buf| buf.copy_to_bytes(buf.remaining()))
            .map_err(std::io::Error::other),
    );
    Box::pin(futures::stream::unfold(
        Some(body),
        move |body| async move {
            let mut body = body?;
            match tokio::time::timeout(idle, body.next()).await {
                Ok(Some(item)) => Some((item, Some(body))),
                Ok(None) => None,
                Err(_) => Some((
                    Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("the body stalled: no bytes for {} s", idle.as_secs()),
                    )),
                    None,
                )),
            }
        },
    ))
}

/// The request body as [`idle_limited`] bytes.
pub fn idle_body(
    idle: Duration,
) -> impl Filter<Extract = (ByteStream,), Error = Rejection> + Clone {
    warp::body::stream().map(move |body| idle_limited(body, idle))
}

/// The archive's bytes: the multipart field `model` when the content type is multipart,
/// else the body itself.
pub async fn archive_bytes(
    content_type: Option<&str>,
    body: ByteStream,
    limits: MultipartLimits,
) -> Result<ByteStream> {
    match content_type.and_then(multipart_boundary) {
        Some(boundary) => multipart_field(body, boundary, limits).await,
        None => Ok(body),
    }
}

fn multipart_boundary(content_type: &str) -> Option<String> {
    multer::parse_boundary(content_type).ok()
}

/// Streams the multipart field [`FIELD`] out of the body.
async fn multipart_field(
    body: ByteStream,
    boundary: String,
    limits: MultipartLimits,
) -> Result<ByteStream> {
    // multer buffers a part's headers until their end, however long: the body is counted
    // on its way in, against `max_head_bytes` until the archive part starts.
    let budget = Arc::new(AtomicU64::new(limits.max_head_bytes));
    let counted = {
        let budget = budget.clone();
        let mut seen = 0u64;
        body.map(move |chunk| {
            let chunk = chunk?;
            seen += chunk.len() as u64;
            let allowed = budget.load(Ordering::Relaxed);
            if seen > allowed {
                return Err(std::io::Error::other(HeadTooLarge(allowed)));
            }
            Ok(chunk)
        })
    };
    let constraints = multer::Constraints::new().size_limit(
        multer::SizeLimit::new()
            .per_field(limits.max_head_bytes)
            .for_field(FIELD, u64::MAX),
    );
    let mut multipart = multer::Multipart::with_constraints(counted, boundary, constraints);
    let mut parts = 0;
    loop {
        let part = multipart.next_field().await.map_err(multipart_error)?;
        let Some(part) = part else {
            return Err(Error::Upload(format!(
                "the multipart body has no field named `{FIELD}`"
            )));
        };
        parts += 1;
        if parts > limits.max_parts {
            return Err(Error::Upload(format!(
                "the multipart body has more than {} parts before `{FIELD}`",
                limits.max_parts
            )));
        }
        if part.name() == Some(FIELD) {
            // From here on the store's own size limit bounds what streams.
            budget.store(u64::MAX, Ordering::Relaxed);
            let stream =
                futures::stream::unfold((part, multipart), |(mut part, multipart)| async move {
                    match part.chunk().await {
                        Ok(Some(chunk)) => Some((Ok(chunk), (part, multipart))),
                        Ok(None) => None,
                        Err(e) => Some((Err(std::io::Error::other(e)), (part, multipart))),
                    }
                });
            return Ok(Box::pin(stream));
        }
    }
}

/// The multipart head went over its budget.
#[derive(Debug)]
struct HeadTooLarge(u64);

impl std::fmt::Display for HeadTooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the multipart body spends more than {} bytes before its `{FIELD}` part",
            self.0
        )
    }
}

impl std::error::Error for HeadTooLarge {}

fn multipart_error(error: multer::Error) -> Error {
    match &error {
        multer::Error::StreamReadFailed(inner) => {
            if let Some(too_large) = find::<HeadTooLarge>(inner.as_ref()) {
                return Error::Upload(too_large.to_string());
            }
            Error::Upload(format!("reading the multipart body: {inner}"))
        }
        multer::Error::FieldSizeExceeded { limit, field_name } => Error::Upload(format!(
            "the multipart field `{}` is larger than {limit} bytes",
            field_name.as_deref().unwrap_or("?")
        )),
        _ => Error::Upload(format!("reading the multipart body: {error}")),
    }
}

fn find<'a, T: std::error::Error + 'static>(
    mut error: &'a (dyn std::error::Error + 'static),
) -> Option<&'a T> {
    loop {
        if let Some(found) = error.downcast_ref::<T>() {
            return Some(found);
        }
        error = error.source()?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn body(chunks: Vec<Vec<u8>>) -> ByteStream {
        Box::pin(futures::stream::iter(
            chunks.into_iter().map(|c| Ok(Bytes::from(c))),
        ))
    }

    async fn collect(stream: ByteStream) -> std::io::Result<Vec<u8>> {
        let chunks: Vec<Bytes> = stream.try_collect().await?;
        Ok(chunks.concat())
    }

    const CT: &str = "multipart/form-data; boundary=XyZ";

    fn part(name: &str, data: &str) -> String {
        format!("--XyZ\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{data}\r\n")
    }

    #[tokio::test]
    async fn the_model_field_streams_after_other_fields() {
        let text = format!(
            "{}{}--XyZ--\r\n",
            part("note", "hi"),
            part(FIELD, "ARCHIVE")
        );
        let stream = archive_bytes(Some(CT), body(vec![text.into_bytes()]), Default::default())
            .await
            .unwrap();
        assert_eq!(collect(stream).await.unwrap(), b"ARCHIVE");
        // Not multipart: the body is the archive.
        let raw = archive_bytes(
            Some("application/gzip"),
            body(vec![b"RAW".to_vec()]),
            Default::default(),
        )
        .await
        .unwrap();
        assert_eq!(collect(raw).await.unwrap(), b"RAW");
    }

    #[tokio::test]
    async fn headers_that_never_end_stop_at_the_budget() {
        let limits = MultipartLimits {
            max_head_bytes: 4096,
            max_parts: 8,
        };
        let head = b"--XyZ\r\nContent-Disposition: form-data; name=\"model\"\r\nX-Pad: ".to_vec();
        // An endless header: chunks of padding, never a blank line.
        let endless =
            futures::stream::iter(std::iter::once(head).chain(std::iter::repeat(vec![b'a'; 1024])))
                .map(|c| Ok(Bytes::from(c)));
        let err = archive_bytes(Some(CT), Box::pin(endless), limits)
            .await
            .err()
            .unwrap();
        assert!(
            err.to_string().contains("more than 4096 bytes before"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn too_many_parts_and_a_missing_field_are_refused() {
        let limits = MultipartLimits {
            max_head_bytes: 1 << 20,
            max_parts: 2,
        };
        let many = format!(
            "{}{}{}--XyZ--\r\n",
            part("a", "1"),
            part("b", "2"),
            part(FIELD, "x")
        );
        let err = archive_bytes(Some(CT), body(vec![many.into_bytes()]), limits)
            .await
            .err()
            .unwrap();
        assert!(err.to_string().contains("more than 2 parts"), "{err}");
        let none = format!("{}--XyZ--\r\n", part("a", "1"));
        let err = archive_bytes(Some(CT), body(vec![none.into_bytes()]), limits)
            .await
            .err()
            .unwrap();
        assert!(err.to_string().contains("no field named `model`"), "{err}");
    }

    #[tokio::test]
    async fn a_stalled_body_ends_with_an_error() {
        tokio::time::pause();
        let stalled = futures::stream::iter(vec![Ok::<_, warp::Error>(Bytes::from_static(b"a"))])
            .chain(futures::stream::pending());
        let stream = idle_limited(stalled, Duration::from_secs(5));
        let err = collect(stream).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
        assert!(err.to_string().contains("no bytes for 5 s"), "{err}");
    }
}
