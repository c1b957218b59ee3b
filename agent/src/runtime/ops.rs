//! Commit: an image made from a container's filesystem, on this instance's engine.

use berth_proto::{AgentError, AgentErrorKind, Outcome, Reply};
use bollard::models::ContainerConfig;
use bollard::query_parameters::CommitContainerOptionsBuilder;
use uuid::Uuid;

use super::errors::classify;
use super::Runtime;

/// Labels Berth puts on its containers; an image committed from one must not carry
/// them, or a container made from it would claim to be the original.
const BERTH_LABEL_PREFIX: &str = "berth.";

impl Runtime {
    /// Docker commit of the container as `repository[:tag]` (the engine pauses it for the
    /// moment of the copy, as `docker commit` does).
    pub(super) async fn commit(
        &self,
        container: Uuid,
        repository: &str,
        tag: Option<&str>,
    ) -> Reply {
        let inspect = self.require(container).await?;
        let mut options = CommitContainerOptionsBuilder::new()
            .container(&berth_proto::docker_name(container))
            .repo(repository)
            .comment(&format!("committed by Berth from container {container}"))
            .pause(true);
        if let Some(tag) = tag {
            options = options.tag(tag);
        }
        // The engine merges the container's configuration into the image; Berth's
        // bookkeeping labels are blanked so the image does not name this container
        // or instance (the engine would put back a label that was only left out).
        let mut config = ContainerConfig::default();
        if let Some(labels) = inspect.config.and_then(|c| c.labels) {
            config.labels = Some(
                labels
                    .into_keys()
                    .filter(|k| k.starts_with(BERTH_LABEL_PREFIX))
                    .map(|k| (k, String::new()))
                    .collect(),
            );
        }
        let made = self
            .docker
            .commit_container(options.build(), config)
            .await
            .map_err(|err| classify("commit", container, self.instance, &err))?;
        if made.id.is_empty() {
            return Err(AgentError::new(
                AgentErrorKind::Runtime,
                format!("the engine committed container {container} but named no image"),
            ));
        }
        tracing::info!(container.id = %container, image.id = %made.id, "container committed");
        Ok(Outcome::Committed { image_id: made.id })
    }
}
