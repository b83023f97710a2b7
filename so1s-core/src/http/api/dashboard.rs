//! The dashboard: a web page over the `/v1` api, served at `/` with its files under `/ui/`.
//!
//! The files (`so1s-core/dashboard/`) are plain HTML, CSS and JavaScript compiled into the
//! binary: no CDN, no build step. They hold no data: the page signs in with an api token
//! (kept in the tab's `sessionStorage`) and reads and acts through the same `/v1` routes and
//! roles as the CLI, so serving them needs no token. Every answer carries a strict Content
//! Security Policy (scripts and styles from this origin only, no inline script, no framing).

use warp::http::{header, HeaderValue, StatusCode};
use warp::reply::Response;
use warp::Filter;

/// One file of the dashboard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Asset {
    /// Its path on the api server.
    pub path: &'static str,
    /// Its `Content-Type`.
    pub content_type: &'static str,
    /// Its bytes.
    pub body: &'static str,
}

/// The dashboard's files: the page and what it loads.
pub const ASSETS: [Asset; 4] = [
    Asset {
        path: "/",
        content_type: "text/html; charset=utf-8",
        body: include_str!("../../../dashboard/index.html"),
    },
    Asset {
        path: "/ui/app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../../../dashboard/app.js"),
    },
    Asset {
        path: "/ui/app.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("../../../dashboard/app.css"),
    },
    Asset {
        path: "/ui/favicon.svg",
        content_type: "image/svg+xml",
        body: include_str!("../../../dashboard/favicon.svg"),
    },
];

/// What the page may load and do: its own scripts, styles and images, calls to this origin,
/// nothing inline, never inside a frame.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

/// The file served at `path`, if it is one of the dashboard's.
pub fn asset(path: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|asset| asset.path == path)
}

/// The answer for `asset`, with its security headers.
pub fn response(asset: &Asset) -> Response {
    let mut response = Response::new(asset.body.into());
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    let mut set = |name, value: &'static str| {
        headers.insert(name, HeaderValue::from_static(value));
    };
    set(header::CONTENT_TYPE, asset.content_type);
    set(header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY);
    set(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(header::X_FRAME_OPTIONS, "DENY");
    set(header::REFERRER_POLICY, "no-referrer");
    // Small files that change with the binary: always revalidated.
    set(header::CACHE_CONTROL, "no-cache");
    response
}

/// `GET /` and `GET /ui/...` (when `enabled`; otherwise they are not found, as any
/// unknown path).
pub fn routes(
    enabled: bool,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    // The path first: another method on another path stays a 404, not a 405.
    warp::path::full()
        .and_then(move |path: warp::path::FullPath| async move {
            match asset(path.as_str()) {
                Some(asset) if enabled => Ok(asset),
                _ => Err(warp::reject::not_found()),
            }
        })
        .and(warp::get())
        .map(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_the_page_loads_is_served() {
        let page = asset("/").unwrap().body;
        for reference in ["/ui/app.js", "/ui/app.css", "/ui/favicon.svg"] {
            assert!(
                page.contains(reference),
                "the page does not load {reference}"
            );
            assert!(asset(reference).is_some(), "{reference} is not served");
        }
        assert!(asset("/ui/missing.js").is_none());
        assert!(asset("/ui/../Cargo.toml").is_none());
    }

    #[test]
    fn the_page_has_no_inline_script_or_style_the_policy_would_block() {
        let page = asset("/").unwrap().body;
        // Every <script> has a src; no style attributes or <style> blocks; no handlers.
        for (i, _) in page.match_indices("<script") {
            let tag = &page[i..i + page[i..].find('>').unwrap()];
            assert!(tag.contains(" src="), "inline script: {tag}");
        }
        assert!(!page.contains("<style"), "inline <style> block");
        assert!(!page.contains(" style="), "inline style attribute");
        assert!(!page.contains(" onclick="), "inline event handler");
        // The script never parses data as markup or code (its comments may name the sinks;
        // a use of one is a property access or a call).
        let script = asset("/ui/app.js").unwrap().body;
        for sink in [
            ".innerHTML",
            ".outerHTML",
            "insertAdjacentHTML(",
            "document.write(",
            "eval(",
            "new Function(",
        ] {
            assert!(!script.contains(sink), "app.js uses {sink}");
        }
        assert!(script.contains(".textContent"), "app.js writes text");
    }

    #[test]
    fn answers_carry_the_security_headers() {
        let response = response(asset("/ui/app.js").unwrap());
        let headers = response.headers();
        assert_eq!(headers["content-type"], "text/javascript; charset=utf-8");
        assert_eq!(headers["content-security-policy"], CONTENT_SECURITY_POLICY);
        assert_eq!(headers["x-content-type-options"], "nosniff");
        assert_eq!(headers["x-frame-options"], "DENY");
        assert!(CONTENT_SECURITY_POLICY.contains("script-src 'self'"));
        assert!(!CONTENT_SECURITY_POLICY.contains("unsafe"));
    }
}
