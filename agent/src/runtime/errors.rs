//! Turning the engine's failures into [`AgentError`]s a person can act on.
//!
//! The service decides how to react from the error's kind alone (retry, mark the
//! container as errored, tell the user a port is taken), so the classification lives
//! in one place and is tested without an engine.

use berth_proto::{AgentError, AgentErrorKind};
use bollard::errors::Error as EngineError;
use uuid::Uuid;

/// The text the engine gave for a failure, without bollard's own wrapping.
pub(crate) fn engine_message(err: &EngineError) -> String {
    match err {
        EngineError::DockerResponseServerError { message, .. } => message.trim().to_owned(),
        EngineError::DockerStreamError { error } => error.trim().to_owned(),
        EngineError::RequestTimeoutError => "the Docker engine did not answer in time".to_owned(),
        other => other.to_string(),
    }
}

/// The HTTP status the engine answered with, when it answered at all.
pub(crate) fn status_code(err: &EngineError) -> Option<u16> {
    match err {
        EngineError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// Whether the engine said the object (container or image) does not exist.
pub(crate) fn is_not_found(err: &EngineError) -> bool {
    status_code(err) == Some(404)
}

/// Whether the engine refused because a host port or address is already taken.
///
/// Docker reports this in two ways depending on whether the userland proxy or
/// iptables found the clash first; both are 500s, so the text is all there is.
pub(crate) fn is_port_in_use(message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    message.contains("port is already allocated") || message.contains("address already in use")
}

/// The `address:port` an engine's port-in-use message names, if it names one.
///
/// For example `0.0.0.0:8080` in "Bind for 0.0.0.0:8080 failed: port is already
/// allocated" or "listen tcp4 0.0.0.0:8080: bind: address already in use".
pub(crate) fn port_in_use_address(message: &str) -> Option<&str> {
    message.split_whitespace().find_map(|token| {
        let token = token.trim_end_matches([':', ',', ';', ')']);
        let (host, port) = token.rsplit_once(':')?;
        let is_port = !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit());
        let is_host = host.contains('.') || host.starts_with('[');
        (is_port && is_host).then_some(token)
    })
}

/// Whether the engine refused a removal because one is already under way (for example
/// `AutoRemove` racing an explicit remove); the container is going away either way.
pub(crate) fn is_removal_in_progress(message: &str) -> bool {
    message.to_ascii_lowercase().contains("already in progress")
}

/// The error for a command on a container this instance does not have.
pub(crate) fn not_found(container: Uuid, instance: Uuid) -> AgentError {
    AgentError::new(
        AgentErrorKind::NotFound,
        format!("container {container} does not exist on instance {instance}"),
    )
}

/// Classify an engine failure of `action` (a verb such as "start") on `container`.
///
/// 404 means the container is gone, 409 means the engine refused because of the
/// container's state, a port clash is a conflict too (the user must choose another
/// port), and everything else is a runtime failure carrying the engine's own words.
pub(crate) fn classify(
    action: &str,
    container: Uuid,
    instance: Uuid,
    err: &EngineError,
) -> AgentError {
    let message = engine_message(err);
    match status_code(err) {
        Some(404) => not_found(container, instance),
        Some(409) => AgentError::new(
            AgentErrorKind::Conflict,
            format!("could not {action} container {container} on instance {instance}: {message}"),
        ),
        _ if is_port_in_use(&message) => {
            let what = match port_in_use_address(&message) {
                Some(address) => format!("host address {address} is already in use"),
                None => "a requested host port is already in use".to_owned(),
            };
            AgentError::new(
                AgentErrorKind::Conflict,
                format!(
                    "could not {action} container {container} on instance {instance}: {what}; \
                     choose another host port or free this one ({message})"
                ),
            )
        }
        _ => AgentError::new(
            AgentErrorKind::Runtime,
            format!(
                "the Docker engine on instance {instance} failed to {action} container \
                 {container}: {message}"
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_error(status_code: u16, message: &str) -> EngineError {
        EngineError::DockerResponseServerError {
            status_code,
            message: message.to_owned(),
        }
    }

    const BIND_FAILED: &str = "driver failed programming external connectivity on endpoint \
        berth-x (0123abcd): Bind for 0.0.0.0:18080 failed: port is already allocated";
    const PROXY_FAILED: &str = "driver failed programming external connectivity on endpoint \
        berth-x (0123abcd): Error starting userland proxy: listen tcp4 0.0.0.0:18081: bind: \
        address already in use";

    #[test]
    fn engine_404_is_not_found_and_names_container_and_instance() {
        let (container, instance) = (Uuid::new_v4(), Uuid::new_v4());
        let err = classify(
            "start",
            container,
            instance,
            &server_error(404, "No such container"),
        );
        assert_eq!(err.kind, AgentErrorKind::NotFound);
        assert_eq!(
            err.message,
            format!("container {container} does not exist on instance {instance}")
        );
    }

    #[test]
    fn engine_409_is_a_conflict_that_keeps_the_engine_message() {
        let err = classify(
            "kill",
            Uuid::new_v4(),
            Uuid::new_v4(),
            &server_error(409, "Container abc is not running"),
        );
        assert_eq!(err.kind, AgentErrorKind::Conflict);
        assert!(
            err.message.contains("Container abc is not running"),
            "{}",
            err.message
        );
    }

    #[test]
    fn port_already_allocated_is_a_conflict_naming_the_address() {
        let err = classify(
            "start",
            Uuid::new_v4(),
            Uuid::new_v4(),
            &server_error(500, BIND_FAILED),
        );
        assert_eq!(err.kind, AgentErrorKind::Conflict);
        assert!(
            err.message
                .contains("host address 0.0.0.0:18080 is already in use"),
            "{}",
            err.message
        );
    }

    #[test]
    fn userland_proxy_address_in_use_is_a_conflict_naming_the_address() {
        let err = classify(
            "start",
            Uuid::new_v4(),
            Uuid::new_v4(),
            &server_error(500, PROXY_FAILED),
        );
        assert_eq!(err.kind, AgentErrorKind::Conflict);
        assert!(
            err.message
                .contains("host address 0.0.0.0:18081 is already in use"),
            "{}",
            err.message
        );
    }

    #[test]
    fn other_engine_failures_are_runtime_errors_with_the_engine_message() {
        let err = classify(
            "start",
            Uuid::new_v4(),
            Uuid::new_v4(),
            &server_error(
                500,
                "OCI runtime create failed: exec: \"nosuch\": not found",
            ),
        );
        assert_eq!(err.kind, AgentErrorKind::Runtime);
        assert!(
            err.message.contains("OCI runtime create failed"),
            "{}",
            err.message
        );
    }

    #[test]
    fn a_timeout_is_a_runtime_error_saying_the_engine_did_not_answer() {
        let err = classify(
            "stop",
            Uuid::new_v4(),
            Uuid::new_v4(),
            &EngineError::RequestTimeoutError,
        );
        assert_eq!(err.kind, AgentErrorKind::Runtime);
        assert!(
            err.message.contains("did not answer in time"),
            "{}",
            err.message
        );
    }

    #[test]
    fn port_in_use_address_understands_ipv6_and_ignores_other_colons() {
        assert_eq!(
            port_in_use_address("Bind for [::]:8080 failed: port is already allocated"),
            Some("[::]:8080")
        );
        assert_eq!(
            port_in_use_address("endpoint x (abc): bind: address already in use"),
            None
        );
    }

    #[test]
    fn stream_errors_report_the_engine_text_without_bollard_wrapping() {
        let err = EngineError::DockerStreamError {
            error: "pull access denied for nosuch".to_owned(),
        };
        assert_eq!(engine_message(&err), "pull access denied for nosuch");
    }

    #[test]
    fn removal_in_progress_is_recognised() {
        assert!(is_removal_in_progress(
            "removal of container abc is already in progress"
        ));
        assert!(!is_removal_in_progress("No such container: abc"));
    }
}
