//! _ping, version, info. (Owned by the auth/TLS work; stubs until then.)

use super::{Call, Cx, DockerError, Response};

/// Not built yet.
pub async fn version(_cx: &Cx, _call: Call) -> Result<Response, DockerError> {
    Err(DockerError::not_implemented("version"))
}

/// Not built yet.
pub async fn info(_cx: &Cx, _call: Call) -> Result<Response, DockerError> {
    Err(DockerError::not_implemented("info"))
}

/// `HEAD|GET /_ping`.
pub fn ping(method: &hyper::Method) -> Response {
    let mut resp = if method == hyper::Method::HEAD {
        super::empty(hyper::StatusCode::OK)
    } else {
        let mut r = hyper::Response::new(super::full("OK"));
        r.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        r
    };
    let h = resp.headers_mut();
    h.insert(
        "Cache-Control",
        hyper::header::HeaderValue::from_static("no-cache, no-store, must-revalidate"),
    );
    h.insert(
        "Pragma",
        hyper::header::HeaderValue::from_static("no-cache"),
    );
    h.insert(
        "Builder-Version",
        hyper::header::HeaderValue::from_static("1"),
    );
    h.insert("Swarm", hyper::header::HeaderValue::from_static("inactive"));
    resp
}
