//! Capsules (pods): reading a template file, the capsule view as the server sends it,
//! and its records for `osc capsule-list` and `capsule-show`.
//!
//! The template is parsed here only as far as YAML or JSON goes: the server is the
//! authority on the three formats it accepts (Zun capsule templates, Google container
//! manifests v1beta1/v1beta2, Kubernetes v1 Pods) and names the field of any error.

use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

use crate::container::InputError;
use crate::hosts::ObjectView;

/// A capsule as the server shows it (Zun's capsule view plus Berth's `pod_status`),
/// kept as a JSON object so that fields this client does not know are shown too.
pub type CapsuleView = ObjectView;

/// The body of `GET /capsules`.
#[derive(Debug, Deserialize)]
pub(crate) struct CapsuleList {
    #[serde(default)]
    pub capsules: Vec<CapsuleView>,
    #[serde(default)]
    pub next: Option<String>,
}

/// Fields of a capsule, in the order `capsule-show` prints them (Zun's, then Berth's).
pub const CAPSULE_FIELDS: &[&str] = &[
    "uuid",
    "name",
    "status",
    "status_reason",
    "generation",
    "restart_policy",
    "cpu",
    "memory",
    "addresses",
    "labels",
    "annotations",
    "project_id",
    "user_id",
    "host",
    "init_containers",
    "containers",
    "pod_status",
    "rollback",
    "created_at",
    "updated_at",
    "links",
];

/// Default columns of `capsule-list` (python-zunclient's).
pub const CAPSULE_LIST_COLUMNS: &[&str] = &["uuid", "name", "status", "addresses"];

/// Reads a template file (`-` for stdin): JSON when it parses as JSON, else YAML. The
/// document must be a mapping.
pub fn read_template(path: &Path) -> Result<Value, InputError> {
    let text = if path.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin())
            .map_err(|e| InputError::new(format!("could not read the template from stdin: {e}")))?
    } else {
        std::fs::read_to_string(path).map_err(|e| {
            InputError::new(format!(
                "could not read the template {}: {e}",
                path.display()
            ))
        })?
    };
    parse_template(&text).map_err(|why| {
        let name = if path.as_os_str() == "-" {
            "stdin".to_string()
        } else {
            path.display().to_string()
        };
        InputError::new(format!("{name}: {why}"))
    })
}

/// Parses a template's text: JSON, else YAML; it must be one mapping.
pub fn parse_template(text: &str) -> Result<Value, String> {
    let trimmed = text.trim_start();
    let value: Value = if trimmed.starts_with('{') {
        serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?
    } else {
        serde_yaml::from_str(text).map_err(|e| format!("not valid YAML or JSON: {e}"))?
    };
    match value {
        Value::Object(_) => Ok(value),
        Value::Null => Err("the template is empty; expected a capsule template, a container manifest or a Kubernetes Pod".into()),
        other => Err(format!(
            "the template must be a mapping (kind: capsule, kind: Pod, or a container manifest with version:), not {}",
            kind_of(&other)
        )),
    }
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// A capsule as a record: the known fields first, in order, then the others.
pub fn capsule_record(view: &CapsuleView) -> crate::output::Record {
    crate::hosts::object_record(view, CAPSULE_FIELDS)
}

/// The capsule's name, else its uuid, else `fallback`.
pub fn label_of<'a>(view: &'a CapsuleView, fallback: &'a str) -> &'a str {
    view.get("name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .or_else(|| view.get("uuid").and_then(Value::as_str))
        .unwrap_or(fallback)
}

/// The capsule's status (`Creating`, `Running`, `Error`…); empty when absent.
pub fn status_of(view: &CapsuleView) -> &str {
    view.get("status").and_then(Value::as_str).unwrap_or("")
}

/// The generation the capsule's spec is at, when the server says.
pub fn generation_of(view: &CapsuleView) -> Option<i64> {
    view.get("generation").and_then(Value::as_i64)
}

/// The agent-reported pod status (`pod_status`), when there is one.
pub fn pod_status_of(view: &CapsuleView) -> Option<&serde_json::Map<String, Value>> {
    view.get("pod_status").and_then(Value::as_object)
}

/// A short description of where the pod is: `Creating (Pending: web ContainerCreating)`.
pub fn describe(view: &CapsuleView) -> String {
    let status = status_of(view);
    let status = if status.is_empty() { "Unknown" } else { status };
    let Some(pod) = pod_status_of(view) else {
        return status.to_string();
    };
    let phase = pod
        .get("phase")
        .and_then(Value::as_str)
        .unwrap_or("Unknown");
    let mut notes = Vec::new();
    for list in ["init_container_statuses", "container_statuses"] {
        for c in pod
            .get(list)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let name = c.get("name").and_then(Value::as_str).unwrap_or("?");
            let state = c.get("state");
            let reason = state
                .and_then(|s| s.get("waiting").or_else(|| s.get("terminated")))
                .and_then(|s| s.get("reason"))
                .and_then(Value::as_str);
            if let Some(reason) = reason {
                notes.push(format!("{name} {reason}"));
            }
        }
    }
    if notes.is_empty() {
        format!("{status} ({phase})")
    } else {
        format!("{status} ({phase}: {})", notes.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_and_yaml_templates_parse_to_the_same_object() {
        let yaml =
            "kind: capsule\nmetadata:\n  name: web\nspec:\n  containers:\n  - image: nginx\n";
        let json_text = r#"{"kind": "capsule", "metadata": {"name": "web"}, "spec": {"containers": [{"image": "nginx"}]}}"#;
        assert_eq!(
            parse_template(yaml).unwrap(),
            parse_template(json_text).unwrap()
        );
    }

    #[test]
    fn templates_that_are_not_mappings_are_refused_with_what_was_found() {
        assert!(parse_template("").unwrap_err().contains("empty"));
        assert!(parse_template("- a\n- b\n").unwrap_err().contains("a list"));
        assert!(parse_template("{\"kind\": ").unwrap_err().contains("JSON"));
        assert!(parse_template("kind: [unclosed")
            .unwrap_err()
            .contains("YAML"));
    }

    #[test]
    fn missing_file_is_named_in_the_error() {
        let err = read_template(Path::new("/nonexistent/pod.yaml")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/pod.yaml"), "{err}");
    }

    #[test]
    fn description_names_the_phase_and_waiting_containers() {
        let view: CapsuleView = serde_json::from_value(json!({
            "uuid": "u", "name": "p", "status": "Creating",
            "pod_status": {"phase": "Pending", "container_statuses": [
                {"name": "web", "state": {"waiting": {"reason": "ContainerCreating"}}},
                {"name": "side", "state": {"running": {"started_at": "2026-01-01T00:00:00Z"}}}
            ]}
        }))
        .unwrap();
        assert_eq!(describe(&view), "Creating (Pending: web ContainerCreating)");
        let bare: CapsuleView = serde_json::from_value(json!({"status": "Running"})).unwrap();
        assert_eq!(describe(&bare), "Running");
    }
}
