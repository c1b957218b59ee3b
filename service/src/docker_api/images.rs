//! Image routes. (Owned by the streams/images work; stubs until then.)

use super::{Call, Cx, DockerError, Response};

/// Not built yet.
pub async fn pull(_cx: &Cx, _call: Call) -> Result<Response, DockerError> {
    Err(DockerError::not_implemented("pull"))
}

/// Not built yet.
pub async fn list(_cx: &Cx, _call: Call) -> Result<Response, DockerError> {
    Err(DockerError::not_implemented("list"))
}

/// Not built yet.
pub async fn inspect(_cx: &Cx, _name: &str, _call: Call) -> Result<Response, DockerError> {
    Err(DockerError::not_implemented("image inspect"))
}

/// Not built yet.
pub async fn remove(_cx: &Cx, _name: &str, _call: Call) -> Result<Response, DockerError> {
    Err(DockerError::not_implemented("image remove"))
}

/// Not built yet.
pub async fn login(_cx: &Cx, _call: Call) -> Result<Response, DockerError> {
    Err(DockerError::not_implemented("registry login"))
}
