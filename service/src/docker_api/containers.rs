//! Container routes. (Owned by the containers work; stubs until then.)

use super::{Call, Cx, DockerError, Response};

/// Not built yet.
pub async fn create(_cx: &Cx, _call: Call) -> Result<Response, DockerError> {
    Err(DockerError::not_implemented("create"))
}

/// Not built yet.
pub async fn list(_cx: &Cx, _call: Call) -> Result<Response, DockerError> {
    Err(DockerError::not_implemented("list"))
}

/// Not built yet.
pub async fn inspect(_cx: &Cx, _id: &str, _call: Call) -> Result<Response, DockerError> {
    Err(DockerError::not_implemented("inspect"))
}

/// Not built yet.
pub async fn start(_cx: &Cx, _id: &str, _call: Call) -> Result<Response, DockerError> {
    Err(DockerError::not_implemented("start"))
}

/// Not built yet.
pub async fn stop(_cx: &Cx, _id: &str, _call: Call) -> Result<Response, DockerError> {
    Err(DockerError::not_implemented("stop"))
}

/// Not built yet.
pub async fn restart(_cx: &Cx, _id: &str, _call: Call) -> Result<Response, DockerError> {
    Err(DockerError::not_implemented("restart"))
}

/// Not built yet.
pub async fn kill(_cx: &Cx, _id: &str, _call: Call) -> Result<Response, DockerError> {
    Err(DockerError::not_implemented("kill"))
}

/// Not built yet.
pub async fn pause(_cx: &Cx, _id: &str, _call: Call) -> Result<Response, DockerError> {
    Err(DockerError::not_implemented("pause"))
}

/// Not built yet.
pub async fn unpause(_cx: &Cx, _id: &str, _call: Call) -> Result<Response, DockerError> {
    Err(DockerError::not_implemented("unpause"))
}

/// Not built yet.
pub async fn rename(_cx: &Cx, _id: &str, _call: Call) -> Result<Response, DockerError> {
    Err(DockerError::not_implemented("rename"))
}

/// Not built yet.
pub async fn update(_cx: &Cx, _id: &str, _call: Call) -> Result<Response, DockerError> {
    Err(DockerError::not_implemented("update"))
}

/// Not built yet.
pub async fn wait(_cx: &Cx, _id: &str, _call: Call) -> Result<Response, DockerError> {
    Err(DockerError::not_implemented("wait"))
}

/// Not built yet.
pub async fn top(_cx: &Cx, _id: &str, _call: Call) -> Result<Response, DockerError> {
    Err(DockerError::not_implemented("top"))
}

/// Not built yet.
pub async fn remove(_cx: &Cx, _id: &str, _call: Call) -> Result<Response, DockerError> {
    Err(DockerError::not_implemented("remove"))
}
