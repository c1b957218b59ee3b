//! Types that parse: request values are turned into these at the API's edge, so
//! nothing deeper sees raw strings.

mod container;
mod ports;

pub use container::{
    ContainerName, ContainerStatus, CpuLimit, ImageRef, MemoryMib, RestartPolicy, Signal, TaskState,
};
pub use ports::PortMapping;

/// Why a value was refused. The message says what was wrong and what is accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

impl ParseError {
    pub(crate) fn new(msg: impl Into<String>) -> Self {
        ParseError(msg.into())
    }
}
