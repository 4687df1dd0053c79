//! The consult page: static files compiled into the binary and served at `/`.
//!
//! A participant opens `/#consult=ID&token=TOKEN`; the page publishes with
//! WHIP, subscribes with WHEP and shows the received quality (see
//! `control/static/app.js`). There is no build step: the files are served as
//! written. The token travels in the fragment, which browsers never send, so
//! it appears in no request line or log.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// One embedded file.
#[derive(Debug, Clone, Copy)]
pub struct Asset {
    /// The path it is served at.
    pub path: &'static str,
    /// Its `Content-Type`.
    pub content_type: &'static str,
    /// Its bytes.
    pub body: &'static [u8],
}

/// Every file the page consists of.
pub const ASSETS: [Asset; 3] = [
    Asset {
        path: "/",
        content_type: "text/html; charset=utf-8",
        body: include_bytes!("../static/index.html"),
    },
    Asset {
        path: "/app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../static/app.js"),
    },
    Asset {
        path: "/style.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../static/style.css"),
    },
];

/// Same-origin scripts, styles and requests only; the page is never framed.
/// WebRTC media is not subject to CSP fetch directives.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                   connect-src 'self'; media-src 'self' blob: mediastream:; img-src 'self' data:; \
                   base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Camera and microphone for this origin only; nothing else.
const PERMISSIONS: &str = "camera=(self), microphone=(self), geolocation=(), usb=()";

fn serve(asset: Asset) -> Response {
    (
        StatusCode::OK,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(asset.content_type),
            ),
            // The files change only with the binary; a reload after an
            // upgrade must not run an old script against a new API.
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CSP),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ),
            (
                header::HeaderName::from_static("permissions-policy"),
                HeaderValue::from_static(PERMISSIONS),
            ),
        ],
        asset.body,
    )
        .into_response()
}

/// The page's routes (`/`, `/index.html` and the files it loads), for
/// merging into the API router.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    let mut r = Router::new();
    for asset in ASSETS {
        r = r.route(asset.path, get(move || async move { serve(asset) }));
    }
    r.route("/index.html", get(|| async { serve(ASSETS[0]) }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_refers_only_to_embedded_files() {
        let html = std::str::from_utf8(ASSETS[0].body).expect("UTF-8");
        for (attr, file) in [("src", "app.js"), ("href", "style.css")] {
            assert!(html.contains(&format!("{attr}=\"{file}\"")), "{file}");
            assert!(ASSETS.iter().any(|a| a.path == format!("/{file}")));
        }
    }

    #[test]
    fn script_speaks_the_api_it_is_served_with() {
        let js = std::str::from_utf8(ASSETS[1].body).expect("UTF-8");
        for needle in [
            "/v1/consults/",
            "'whip'",
            "'whep'",
            "application/sdp",
            "method: 'DELETE'",
            "window.switchboardStats",
            "location.hash",
        ] {
            assert!(js.contains(needle), "app.js lacks {needle}");
        }
    }
}
