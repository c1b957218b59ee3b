//! From a hyper request to a handler: the version prefix, the body, authentication and
//! the route table. Every response carries `Api-Version`, `Ostype` and `Server`, as
//! moby's version middleware adds them.

use std::sync::Arc;

use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::{Method, Request, StatusCode};

use super::auth::Peer;
use super::{
    auth, containers, images, stats, streams, system, ApiVersion, Call, Cx, DockerError,
    DockerShared, Query, Response, API_VERSION, MIN_API_VERSION,
};

/// Largest request body accepted (container create bodies are a few KiB).
const MAX_BODY: usize = 4 * 1024 * 1024;

/// Serves one request.
pub async fn handle(shared: Arc<DockerShared>, req: Request<Incoming>, peer: Peer) -> Response {
    let mut resp = match route(shared, req, peer).await {
        Ok(resp) => resp,
        Err(e) => e.into_response(),
    };
    let h = resp.headers_mut();
    h.insert("Api-Version", HeaderValue::from_static("1.51"));
    h.insert("Ostype", HeaderValue::from_static("linux"));
    h.insert(
        "Server",
        HeaderValue::from_static(concat!("Berth/", env!("CARGO_PKG_VERSION"), " (linux)")),
    );
    resp
}

/// Splits `/v1.51/containers/json` into the version and the segments.
fn split_path(path: &str) -> Result<(ApiVersion, Vec<String>), DockerError> {
    let mut segments: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect();
    let version = match segments.first() {
        Some(first) if first.starts_with('v') && ApiVersion::parse(&first[1..]).is_some() => {
            let v = ApiVersion::parse(&first[1..]).expect("checked");
            segments.remove(0);
            if v > API_VERSION {
                return Err(DockerError::bad_request(format!(
                    "client version {v} is too new. Maximum supported API version is {API_VERSION}"
                )));
            }
            if v < MIN_API_VERSION {
                return Err(DockerError::bad_request(format!(
                    "client version {v} is too old. Minimum supported API version is {MIN_API_VERSION}, please upgrade your client to a newer version"
                )));
            }
            v
        }
        _ => API_VERSION,
    };
    Ok((version, segments))
}

async fn route(
    shared: Arc<DockerShared>,
    mut req: Request<Incoming>,
    peer: Peer,
) -> Result<Response, DockerError> {
    let (version, segments) = split_path(req.uri().path())?;
    let method = req.method().clone();
    let segs: Vec<&str> = segments.iter().map(String::as_str).collect();
    // `_ping` answers without authentication: the CLI pings before anything else, and
    // a failed ping only costs it version negotiation.
    if segs == ["_ping"] && (method == Method::GET || method == Method::HEAD) {
        return Ok(system::ping(&method));
    }
    let upgrade = wants_upgrade(&req).then(|| hyper::upgrade::on(&mut req));
    let query = Query::parse(req.uri().query());
    let headers = req.headers().clone();
    let body = Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| {
            DockerError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the request body could not be read ({e}); bodies are limited to {MAX_BODY} bytes"),
            )
        })?
        .to_bytes();
    let call = Call {
        method,
        version,
        segments,
        query,
        headers,
        body,
        upgrade,
    };
    let ctx = auth::identify(&shared, &call.headers, &peer).await?;
    let cx = Cx { shared, ctx };
    dispatch(&cx, call).await
}

fn wants_upgrade(req: &Request<Incoming>) -> bool {
    req.headers()
        .get(hyper::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("tcp"))
}

/// The route table.
async fn dispatch(cx: &Cx, call: Call) -> Result<Response, DockerError> {
    use Method as M;
    let segs: Vec<String> = call.segments.clone();
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    let m = call.method.clone();
    match (&m, segs.as_slice()) {
        (&M::GET, ["version"]) => system::version(cx, call).await,
        (&M::GET, ["info"]) => system::info(cx, call).await,

        (&M::POST, ["containers", "create"]) => containers::create(cx, call).await,
        (&M::GET, ["containers", "json"]) => containers::list(cx, call).await,
        (&M::GET, ["containers", id, "json"]) => containers::inspect(cx, id, call).await,
        (&M::POST, ["containers", id, "start"]) => containers::start(cx, id, call).await,
        (&M::POST, ["containers", id, "stop"]) => containers::stop(cx, id, call).await,
        (&M::POST, ["containers", id, "restart"]) => containers::restart(cx, id, call).await,
        (&M::POST, ["containers", id, "kill"]) => containers::kill(cx, id, call).await,
        (&M::POST, ["containers", id, "pause"]) => containers::pause(cx, id, call).await,
        (&M::POST, ["containers", id, "unpause"]) => containers::unpause(cx, id, call).await,
        (&M::POST, ["containers", id, "rename"]) => containers::rename(cx, id, call).await,
        (&M::POST, ["containers", id, "update"]) => containers::update(cx, id, call).await,
        (&M::POST, ["containers", id, "wait"]) => containers::wait(cx, id, call).await,
        (&M::GET, ["containers", id, "top"]) => containers::top(cx, id, call).await,
        (&M::DELETE, ["containers", id]) => containers::remove(cx, id, call).await,

        (&M::GET, ["containers", id, "logs"]) => streams::logs(cx, id, call).await,
        (&M::GET, ["containers", id, "stats"]) => stats::stats(cx, id, call).await,
        (&M::POST, ["containers", id, "attach"]) => streams::attach(cx, id, call).await,
        (&M::POST, ["containers", id, "resize"]) => streams::resize_container(cx, id, call).await,
        (&M::POST, ["containers", id, "exec"]) => streams::exec_create(cx, id, call).await,
        (&M::POST, ["exec", id, "start"]) => streams::exec_start(cx, id, call).await,
        (&M::POST, ["exec", id, "resize"]) => streams::exec_resize(cx, id, call).await,
        (&M::GET, ["exec", id, "json"]) => streams::exec_inspect(cx, id, call).await,

        (&M::POST, ["images", "create"]) => images::pull(cx, call).await,
        (&M::POST, ["auth"]) => images::login(cx, call).await,
        (&M::GET, ["images", "json"]) => images::list(cx, call).await,
        // Image names contain slashes: everything between `images/` and `/json`.
        (&M::GET, ["images", rest @ .., "json"]) if !rest.is_empty() => {
            images::inspect(cx, &rest.join("/"), call).await
        }
        (&M::DELETE, ["images", rest @ ..]) if !rest.is_empty() => {
            images::remove(cx, &rest.join("/"), call).await
        }

        // Known Docker API areas Berth does not offer: a clear 501, never a hang.
        (
            _,
            ["build" | "swarm" | "services" | "tasks" | "secrets" | "configs" | "nodes" | "plugins"
            | "session" | "grpc" | "distribution" | "commit", ..],
        ) => Err(DockerError::not_implemented(&format!("/{}", segs[0]))),
        // moby's answer to an unknown route; also what `docker inspect X` expects when
        // probing object kinds (it skips 404s).
        _ => Err(DockerError::new(StatusCode::NOT_FOUND, "page not found")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_taken_from_the_path_and_bounded() {
        let (v, s) = split_path("/v1.50/containers/json").unwrap();
        assert_eq!(
            (v, s),
            (
                ApiVersion(1, 50),
                vec!["containers".to_owned(), "json".to_owned()]
            )
        );
        let (v, s) = split_path("/_ping").unwrap();
        assert_eq!((v, s), (API_VERSION, vec!["_ping".to_owned()]));
        let e = split_path("/v1.99/info").unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(e.message.contains("too new"), "{}", e.message);
        let e = split_path("/v1.12/info").unwrap_err();
        assert!(e.message.contains("too old"), "{}", e.message);
    }

    #[test]
    fn booleans_and_filters_read_as_moby_reads_them() {
        let q = Query::parse(Some(
            "all=1&size=0&x=no&filters=%7B%22label%22%3A%7B%22a%3Db%22%3Atrue%7D%7D",
        ));
        assert!(q.bool("all", false));
        assert!(!q.bool("size", true));
        assert!(!q.bool("x", true));
        assert!(q.bool("missing", true));
        let f = q.filters().unwrap();
        assert_eq!(f["label"], vec!["a=b".to_owned()]);
        let legacy = Query::parse(Some("filters=%7B%22status%22%3A%5B%22running%22%5D%7D"));
        assert_eq!(
            legacy.filters().unwrap()["status"],
            vec!["running".to_owned()]
        );
    }
}
