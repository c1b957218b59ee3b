//! Wire types shared by Berth's service, relay and agent.
//!
//! Everything here is plain data with serde derives and no I/O. Messages travel as
//! JSON text frames over WebSocket connections:
//!
//! ```text
//!  service ──ServiceToRelay──▶ relay ──RelayToAgent──▶ agent
//!  service ◀─RelayToService─── relay ◀─AgentToRelay─── agent
//! ```
//!
//! The relay routes commands by instance id and routes replies back to the service
//! connection that sent the request; it keeps no durable state.

pub mod auth;
pub mod command;
pub mod container;
pub mod enroll;
pub mod pod;
pub mod relay;
pub mod stream;

pub use command::{AgentError, AgentErrorKind, Command, ImageInfo, Outcome, Reply};
pub use container::{
    BindMount, ContainerEvent, ContainerSpec, DeviceMapping, InfraOptions, ObservedContainer,
    PortBinding, Privileges, RuntimeState,
};
pub use relay::{AgentToRelay, RelayToAgent, RelayToService, RequestId, ServiceToRelay};
pub use stream::{
    Channel, ExecSpec, RegistryAuth, StreamData, StreamEnd, StreamId, StreamMessage, StreamOpen,
};

/// Docker label that carries the Berth container uuid on every container an agent makes.
pub const LABEL_CONTAINER: &str = "berth.container";
/// Docker label that carries the instance id; an agent manages only containers with its own.
pub const LABEL_INSTANCE: &str = "berth.instance";

/// The Docker name an agent gives the container with this Berth uuid.
///
/// The name is derived from the uuid, so a retried create finds the container the
/// first attempt made instead of making a second one.
pub fn docker_name(container: uuid::Uuid) -> String {
    format!("berth-{container}")
}

/// Path on the relay where agents connect.
pub const RELAY_AGENT_PATH: &str = "/v1/agent";
/// Path on the relay where services connect.
pub const RELAY_SERVICE_PATH: &str = "/v1/service";
