//! Listeners of the Docker endpoint. (Owned by the auth/TLS work.)
