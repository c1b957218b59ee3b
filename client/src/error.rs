//! The one error type of the library.

use std::fmt;

/// Everything that can go wrong talking to Berth (or to its identity service).
///
/// Every variant renders as one sentence that says what was wrong; [`ClientError::Api`]
/// ends with the HTTP status, e.g. `Cannot start container web in Running state (HTTP 409)`.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with a non-success status.
    #[error("{} (HTTP {status})", .body.message())]
    Api {
        /// HTTP status code, e.g. 409.
        status: u16,
        /// What the server said, parsed from its error body.
        body: ApiErrorBody,
    },
    /// The request never got an answer (connection refused, DNS, TLS, timeout).
    #[error("could not reach {url}: {reason}")]
    Unreachable {
        /// The URL that was requested.
        url: String,
        /// The transport's explanation, with its cause chain.
        reason: String,
    },
    /// The server answered with a success status, but not with what the API promises.
    #[error("unexpected response from {url}: {reason}")]
    InvalidResponse {
        /// The URL that was requested.
        url: String,
        /// What was wrong with the response.
        reason: String,
    },
    /// A URL given in the configuration (auth URL, endpoint) is not usable.
    #[error("invalid URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// Why it cannot be used.
        reason: String,
    },
    /// The token's service catalog lists no usable container endpoint.
    #[error("the service catalog has no container endpoint for {wanted}; it lists: {available}")]
    NoEndpoint {
        /// The interface and region that were asked for.
        wanted: String,
        /// The container endpoints the catalog does list, or `nothing`.
        available: String,
    },
    /// The HTTP client could not be set up (TLS backend initialisation).
    #[error("could not set up the HTTP client: {0}")]
    Setup(String),
}

impl ClientError {
    /// The HTTP status of an [`ClientError::Api`] error, `None` for other kinds.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// True when the server answered 404 Not Found.
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }

    pub(crate) fn unreachable(url: &reqwest::Url, err: &reqwest::Error) -> Self {
        ClientError::Unreachable {
            url: url.to_string(),
            reason: error_chain(err),
        }
    }

    pub(crate) fn invalid_response(url: &reqwest::Url, reason: impl Into<String>) -> Self {
        ClientError::InvalidResponse {
            url: url.to_string(),
            reason: reason.into(),
        }
    }
}

/// The parts of an error body that Zun and Keystone send.
///
/// Zun sends `{"errors":[{"code","status","title","detail","request_id"}]}`; Keystone and
/// the token middleware send `{"error":{"code","title","message"}}`. A body that is neither
/// keeps its (shortened) text in `detail`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApiErrorBody {
    /// Short title, e.g. `Conflict` or the Zun fault string's message.
    pub title: String,
    /// Longer explanation; often equal to the title in Zun.
    pub detail: String,
    /// Machine-readable code, e.g. `container.invalid-state-exception`.
    pub code: Option<String>,
    /// The request id the server logged, when it sent one.
    pub request_id: Option<String>,
}

impl ApiErrorBody {
    /// Parses an error body; `reason` (the status's reason phrase) is used when the body
    /// says nothing.
    pub fn parse(text: &str, reason: &str) -> Self {
        let mut body = serde_json::from_str::<serde_json::Value>(text)
            .ok()
            .and_then(|value| Self::from_json(&value))
            .unwrap_or_else(|| ApiErrorBody {
                detail: shorten(text.trim(), 300),
                ..ApiErrorBody::default()
            });
        if body.title.is_empty() && body.detail.is_empty() {
            body.title = reason.to_string();
        }
        body
    }

    fn from_json(value: &serde_json::Value) -> Option<Self> {
        let text = |v: Option<&serde_json::Value>| match v {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(serde_json::Value::Null) | None => String::new(),
            Some(other) => other.to_string(),
        };
        if let Some(first) = value.get("errors").and_then(|e| e.get(0)) {
            return Some(ApiErrorBody {
                title: text(first.get("title")),
                detail: text(first.get("detail")),
                code: first
                    .get("code")
                    .and_then(|c| c.as_str())
                    .filter(|c| !c.is_empty())
                    .map(str::to_string),
                request_id: first
                    .get("request_id")
                    .and_then(|c| c.as_str())
                    .filter(|c| !c.is_empty())
                    .map(str::to_string),
            });
        }
        if let Some(error) = value.get("error").filter(|e| e.is_object()) {
            return Some(ApiErrorBody {
                title: text(error.get("title")),
                detail: text(error.get("message")),
                code: None,
                request_id: None,
            });
        }
        // Docker-style and other simple shapes.
        for key in ["message", "error_message", "error"] {
            if let Some(serde_json::Value::String(message)) = value.get(key) {
                return Some(ApiErrorBody {
                    detail: message.clone(),
                    ..ApiErrorBody::default()
                });
            }
        }
        None
    }

    /// One sentence for people: the detail, prefixed by the title when the title adds
    /// something.
    pub fn message(&self) -> String {
        let title = self.title.trim();
        let detail = self.detail.trim();
        match (title.is_empty(), detail.is_empty()) {
            (true, true) => "the server gave no reason".to_string(),
            (true, false) => detail.to_string(),
            (false, true) => title.to_string(),
            (false, false) if detail.contains(title) => detail.to_string(),
            (false, false) => format!("{title}: {detail}"),
        }
    }
}

impl fmt::Display for ApiErrorBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message())
    }
}

/// Renders an error with its causes on one line (`a: b: c`), skipping causes whose text
/// the previous one already contains.
///
/// The generic wrappers of reqwest and hyper (`error sending request for url (...)`,
/// `client error (Connect)`) are left out when a more specific cause follows, so a
/// refused connection reads `tcp connect error: Connection refused (os error 111)`.
pub(crate) fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current = Some(err);
    while let Some(cause) = current {
        let text = cause.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        current = cause.source();
    }
    let generic =
        |p: &String| p.starts_with("error sending request") || p.starts_with("client error (");
    if parts.iter().any(|p| !generic(p)) {
        parts.retain(|p| !generic(p));
    }
    parts.join(": ")
}

fn shorten(text: &str, max_chars: usize) -> String {
    let first_line = text.lines().next().unwrap_or_default();
    if first_line.chars().count() <= max_chars && first_line.len() == text.len() {
        return first_line.to_string();
    }
    let cut: String = first_line.chars().take(max_chars).collect();
    format!("{cut}…")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zun_error_body_gives_detail_and_code() {
        let body = ApiErrorBody::parse(
            r#"{"errors":[{"request_id":"req-1","code":"container.invalid-state-exception","status":409,
                "title":"Cannot start container web in Running state.",
                "detail":"Cannot start container web in Running state.","links":[]}]}"#,
            "Conflict",
        );
        assert_eq!(
            body.message(),
            "Cannot start container web in Running state."
        );
        assert_eq!(
            body.code.as_deref(),
            Some("container.invalid-state-exception")
        );
        assert_eq!(body.request_id.as_deref(), Some("req-1"));
    }

    #[test]
    fn keystone_error_body_gives_title_and_message() {
        let body = ApiErrorBody::parse(
            r#"{"error":{"code":401,"title":"Unauthorized","message":"The request you have made requires authentication."}}"#,
            "Unauthorized",
        );
        assert_eq!(
            body.message(),
            "Unauthorized: The request you have made requires authentication."
        );
    }

    #[test]
    fn empty_body_falls_back_to_the_reason_phrase() {
        let body = ApiErrorBody::parse("", "Not Found");
        assert_eq!(body.message(), "Not Found");
    }

    #[test]
    fn api_error_display_ends_with_the_http_status() {
        let err = ClientError::Api {
            status: 409,
            body: ApiErrorBody {
                detail: "Cannot stop container web in Stopped state.".into(),
                ..Default::default()
            },
        };
        assert_eq!(
            err.to_string(),
            "Cannot stop container web in Stopped state. (HTTP 409)"
        );
    }

    #[derive(Debug)]
    struct Chain(&'static str, Option<Box<Chain>>);

    impl fmt::Display for Chain {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Chain {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|c| c as _)
        }
    }

    #[test]
    fn error_chain_drops_generic_transport_wrappers() {
        let err = Chain(
            "error sending request for url (http://h/)",
            Some(Box::new(Chain(
                "client error (Connect)",
                Some(Box::new(Chain(
                    "tcp connect error",
                    Some(Box::new(Chain("Connection refused (os error 111)", None))),
                ))),
            ))),
        );
        assert_eq!(
            error_chain(&err),
            "tcp connect error: Connection refused (os error 111)"
        );
        let only_generic = Chain("error sending request for url (http://h/)", None);
        assert_eq!(
            error_chain(&only_generic),
            "error sending request for url (http://h/)"
        );
    }

    #[test]
    fn non_json_error_body_is_shortened_to_its_first_line() {
        let body = ApiErrorBody::parse("<html>\n<body>bad gateway</body></html>", "Bad Gateway");
        assert_eq!(body.message(), "<html>…");
    }
}
