//! What `osc` prints when something fails: one `Error: ...` line per failure, with a
//! hint where the fix is not obvious.

use std::fmt;

use crate::error::ClientError;

/// A failure of an `osc` command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CliError {
    failures: Vec<Failure>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Failure {
    message: String,
    hint: Option<String>,
}

impl CliError {
    /// A failure described by `message`.
    pub fn new(message: impl Into<String>) -> Self {
        CliError {
            failures: vec![Failure {
                message: message.into(),
                hint: None,
            }],
        }
    }

    /// Adds a hint (what to do about it) to every failure that has none.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        let hint = hint.into();
        for failure in &mut self.failures {
            failure.hint.get_or_insert_with(|| hint.clone());
        }
        self
    }

    /// Prefixes every message with `context: `.
    pub fn context(mut self, context: impl fmt::Display) -> Self {
        for failure in &mut self.failures {
            failure.message = format!("{context}: {}", failure.message);
        }
        self
    }

    /// Several failures reported together (e.g. deleting several containers).
    pub fn many(errors: Vec<CliError>) -> Self {
        CliError {
            failures: errors.into_iter().flat_map(|e| e.failures).collect(),
        }
    }

    /// The lines to print, each starting with `Error: `.
    pub fn lines(&self) -> Vec<String> {
        self.failures
            .iter()
            .map(|f| match &f.hint {
                Some(hint) => format!("Error: {}; {hint}", f.message),
                None => format!("Error: {}", f.message),
            })
            .collect()
    }

    /// A client error met while talking to the container endpoint.
    pub fn from_api(err: ClientError) -> Self {
        let hint = match &err {
            ClientError::Api { status: 401, .. } => Some(
                "the token was refused; it may have expired, so authenticate again".to_string(),
            ),
            ClientError::Unreachable { .. } => {
                Some("check the container endpoint and that the service is running".to_string())
            }
            _ => None,
        };
        let error = CliError::new(err.to_string());
        match hint {
            Some(hint) => error.with_hint(hint),
            None => error,
        }
    }

    /// A client error met while authenticating.
    pub fn from_auth(err: ClientError) -> Self {
        let hint = match &err {
            ClientError::Api { status: 401, .. } => Some(
                "check the user name, password, project and domain names (OS_USERNAME, OS_PASSWORD, OS_PROJECT_NAME, OS_USER_DOMAIN_NAME, OS_PROJECT_DOMAIN_NAME or the cloud in clouds.yaml)",
            ),
            ClientError::Api { status: 404, .. } => {
                Some("check OS_AUTH_URL; it should look like http://HOST:9517/identity/v3")
            }
            ClientError::Unreachable { .. } => {
                Some("check OS_AUTH_URL and that the identity service is running")
            }
            ClientError::NoEndpoint { .. } => Some(
                "set OS_REGION_NAME / OS_INTERFACE to one the catalog lists, or give the endpoint with --os-endpoint",
            ),
            _ => None,
        };
        let error = CliError::new(format!("authentication failed: {err}"));
        match hint {
            Some(hint) => error.with_hint(hint),
            None => error,
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.lines().join("\n"))
    }
}

impl std::error::Error for CliError {}

impl From<crate::container::InputError> for CliError {
    fn from(err: crate::container::InputError) -> Self {
        CliError::new(err.to_string())
    }
}

impl From<crate::output::UnknownColumn> for CliError {
    fn from(err: crate::output::UnknownColumn) -> Self {
        CliError::new(err.to_string())
    }
}

impl From<crate::clouds::CloudsError> for CliError {
    fn from(err: crate::clouds::CloudsError) -> Self {
        CliError::new(err.to_string())
    }
}

/// Condenses a clap parse error into one line (`what was wrong; tip; where to read
/// more`), so every `osc` failure reads the same way. `subcommand` (when the command line
/// named one) points the reader at that command's help.
pub fn usage_error_line(rendered: &str, subcommand: Option<&str>) -> String {
    let mut message = String::new();
    let mut details = Vec::new();
    let mut tips = Vec::new();
    let mut command = None;
    let mut in_details = false;
    for line in rendered.lines() {
        let trimmed = line.trim();
        if let Some(rest) = trimmed.strip_prefix("error: ") {
            message = rest.trim_end_matches(':').to_string();
            in_details = rest.ends_with(':');
        } else if let Some(tip) = trimmed.strip_prefix("tip: ") {
            tips.push(tip.to_string());
            in_details = false;
        } else if let Some(usage) = trimmed.strip_prefix("Usage: ") {
            let words: Vec<&str> = usage
                .split_whitespace()
                .take_while(|w| !w.starts_with(['-', '[', '<']))
                .collect();
            command = Some(words.join(" "));
            in_details = false;
        } else if trimmed.is_empty() {
            in_details = false;
        } else if in_details && line.starts_with(char::is_whitespace) {
            details.push(trimmed.to_string());
        }
    }
    if message.is_empty() {
        message = rendered
            .lines()
            .next()
            .unwrap_or("invalid arguments")
            .to_string();
    }
    let mut line = format!("Error: {message}");
    if !details.is_empty() {
        line.push_str(": ");
        line.push_str(&details.join(", "));
    }
    for tip in tips {
        line.push_str("; ");
        line.push_str(&tip);
    }
    let command = command
        .filter(|c| !c.is_empty())
        .or_else(|| subcommand.map(|s| format!("osc {s}")))
        .unwrap_or_else(|| "osc".into());
    line.push_str(&format!("; see '{command} --help'"));
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ApiErrorBody;

    #[test]
    fn api_error_line_ends_with_the_http_status() {
        let err = CliError::from_api(ClientError::Api {
            status: 409,
            body: ApiErrorBody {
                detail: "Cannot start container web in Running state".into(),
                ..Default::default()
            },
        });
        assert_eq!(
            err.lines(),
            ["Error: Cannot start container web in Running state (HTTP 409)"]
        );
    }

    #[test]
    fn unauthorized_at_login_hints_at_the_credentials() {
        let err = CliError::from_auth(ClientError::Api {
            status: 401,
            body: ApiErrorBody {
                title: "Unauthorized".into(),
                detail: "The request you have made requires authentication.".into(),
                ..Default::default()
            },
        });
        let line = &err.lines()[0];
        assert!(
            line.starts_with("Error: authentication failed: Unauthorized: "),
            "{line}"
        );
        assert!(line.contains("(HTTP 401); check the user name"), "{line}");
    }

    #[test]
    fn several_failures_give_one_line_each() {
        let err = CliError::many(vec![
            CliError::new("a").context("x"),
            CliError::new("b").with_hint("do c"),
        ]);
        assert_eq!(err.lines(), ["Error: x: a", "Error: b; do c"]);
    }

    #[test]
    fn clap_errors_become_one_line() {
        let rendered = "error: the following required arguments were not provided:\n  --image <IMAGE>\n\nUsage: osc container-create --image <IMAGE>\n\nFor more information, try '--help'.\n";
        assert_eq!(
            usage_error_line(rendered, None),
            "Error: the following required arguments were not provided: --image <IMAGE>; see 'osc container-create --help'"
        );
        let rendered = "error: unexpected argument '--prot' found\n\n  tip: a similar argument exists: '--port'\n\nUsage: osc container-create --port <SPEC>\n\nFor more information, try '--help'.\n";
        assert_eq!(
            usage_error_line(rendered, None),
            "Error: unexpected argument '--prot' found; a similar argument exists: '--port'; see 'osc container-create --help'"
        );
        let rendered = "error: invalid value '' for '<ID>': a container uuid or name is needed\n\nFor more information, try '--help'.\n";
        assert_eq!(
            usage_error_line(rendered, Some("container-show")),
            "Error: invalid value '' for '<ID>': a container uuid or name is needed; see 'osc container-show --help'"
        );
    }
}
