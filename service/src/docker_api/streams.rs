//! Attach, exec, logs, resize. (Owned by the streams/images work; stubs until then.)

use super::{Call, Cx, DockerError, Response};

/// Not built yet.
pub async fn logs(_cx: &Cx, _id: &str, _call: Call) -> Result<Response, DockerError> {
    Err(DockerError::not_implemented("logs"))
}

/// Not built yet.
pub async fn attach(_cx: &Cx, _id: &str, _call: Call) -> Result<Response, DockerError> {
    Err(DockerError::not_implemented("attach"))
}

/// Not built yet.
pub async fn resize_container(_cx: &Cx, _id: &str, _call: Call) -> Result<Response, DockerError> {
    Err(DockerError::not_implemented("resize_container"))
}

/// Not built yet.
pub async fn exec_create(_cx: &Cx, _id: &str, _call: Call) -> Result<Response, DockerError> {
    Err(DockerError::not_implemented("exec_create"))
}

/// Not built yet.
pub async fn exec_start(_cx: &Cx, _id: &str, _call: Call) -> Result<Response, DockerError> {
    Err(DockerError::not_implemented("exec_start"))
}

/// Not built yet.
pub async fn exec_resize(_cx: &Cx, _id: &str, _call: Call) -> Result<Response, DockerError> {
    Err(DockerError::not_implemented("exec_resize"))
}

/// Not built yet.
pub async fn exec_inspect(_cx: &Cx, _id: &str, _call: Call) -> Result<Response, DockerError> {
    Err(DockerError::not_implemented("exec_inspect"))
}

/// Exec instances by id. (Stub.)
#[derive(Default)]
pub struct ExecTable {}
