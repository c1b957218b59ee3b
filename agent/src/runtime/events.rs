//! Which engine events matter to Berth, and what to report for each.

use std::collections::HashMap;

use bollard::models::{EventMessage, EventMessageTypeEnum};
use uuid::Uuid;

/// Container actions after which the container's observed state may differ.
const OBSERVED_ACTIONS: &[&str] = &[
    "create", "start", "die", "oom", "kill", "stop", "pause", "unpause", "restart",
];

/// What to do about one engine event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EngineChange {
    /// Inspect the container (by engine id) and report it as changed.
    Observe {
        /// The engine's id of the container.
        runtime_id: String,
    },
    /// The container is gone; report it removed.
    Removed {
        /// Berth's uuid, from the event's copy of the container's labels.
        uuid: Uuid,
    },
}

/// The engine's event filter for this instance's containers.
pub(crate) fn filters(instance: Uuid) -> HashMap<String, Vec<String>> {
    HashMap::from([
        ("type".to_owned(), vec!["container".to_owned()]),
        (
            "label".to_owned(),
            vec![format!("{}={instance}", berth_proto::LABEL_INSTANCE)],
        ),
    ])
}

/// What an engine event means for Berth, or `None` when it does not matter
/// (exec, attach, health checks, events of other object types, containers without
/// a Berth uuid).
pub(crate) fn engine_change(event: &EventMessage) -> Option<EngineChange> {
    if event.typ != Some(EventMessageTypeEnum::CONTAINER) {
        return None;
    }
    // Some actions carry details after a colon ("exec_start: sh", "health_status: ok").
    let action = event.action.as_deref()?.split(':').next()?.trim();
    let actor = event.actor.as_ref()?;
    // Pods' containers are reported by the kubelet as pods, never one by one.
    if actor
        .attributes
        .as_ref()
        .is_some_and(|labels| labels.contains_key(berth_proto::pod::LABEL_POD))
    {
        return None;
    }
    if action == "destroy" {
        let uuid = actor
            .attributes
            .as_ref()?
            .get(berth_proto::LABEL_CONTAINER)
            .and_then(|value| Uuid::parse_str(value).ok())?;
        return Some(EngineChange::Removed { uuid });
    }
    if OBSERVED_ACTIONS.contains(&action) {
        let runtime_id = actor.id.clone().filter(|id| !id.is_empty())?;
        return Some(EngineChange::Observe { runtime_id });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::EventActor;

    fn event(action: &str, labels: &[(&str, &str)]) -> EventMessage {
        EventMessage {
            typ: Some(EventMessageTypeEnum::CONTAINER),
            action: Some(action.to_owned()),
            actor: Some(EventActor {
                id: Some("abc".to_owned()),
                attributes: Some(
                    labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn state_changing_actions_ask_for_an_inspect_by_engine_id() {
        for action in OBSERVED_ACTIONS {
            assert_eq!(
                engine_change(&event(action, &[])),
                Some(EngineChange::Observe {
                    runtime_id: "abc".to_owned()
                }),
                "{action}"
            );
        }
    }

    #[test]
    fn destroy_reports_the_berth_uuid_from_the_labels() {
        let uuid = Uuid::new_v4();
        let uuid_text = uuid.to_string();
        assert_eq!(
            engine_change(&event(
                "destroy",
                &[(berth_proto::LABEL_CONTAINER, uuid_text.as_str())]
            )),
            Some(EngineChange::Removed { uuid })
        );
    }

    #[test]
    fn destroy_without_a_parseable_uuid_is_ignored() {
        assert_eq!(
            engine_change(&event("destroy", &[(berth_proto::LABEL_CONTAINER, "x")])),
            None
        );
    }

    #[test]
    fn events_of_pod_containers_are_left_to_the_kubelet() {
        let uuid = Uuid::new_v4().to_string();
        for action in ["start", "die", "destroy"] {
            assert_eq!(
                engine_change(&event(
                    action,
                    &[
                        (berth_proto::pod::LABEL_POD, uuid.as_str()),
                        (berth_proto::LABEL_CONTAINER, uuid.as_str())
                    ]
                )),
                None,
                "{action}"
            );
        }
    }

    #[test]
    fn exec_attach_and_health_events_are_ignored() {
        for action in [
            "exec_start: sh -c true",
            "attach",
            "health_status: healthy",
            "rename",
        ] {
            assert_eq!(engine_change(&event(action, &[])), None, "{action}");
        }
    }

    #[test]
    fn events_of_other_object_types_are_ignored() {
        let mut image_event = event("delete", &[]);
        image_event.typ = Some(EventMessageTypeEnum::IMAGE);
        assert_eq!(engine_change(&image_event), None);
    }

    #[test]
    fn the_filter_selects_containers_labelled_with_this_instance() {
        let instance = Uuid::new_v4();
        let filters = filters(instance);
        assert_eq!(filters["type"], vec!["container".to_owned()]);
        assert_eq!(filters["label"], vec![format!("berth.instance={instance}")]);
    }
}
