//! Rust client of Berth's OpenStack-Zun-compatible containers API, and the `osc` command
//! line built on it.
//!
//! ```no_run
//! # async fn demo() -> Result<(), berth_client::ClientError> {
//! use berth_client::{AuthConfig, Client, CreateContainer, PasswordAuth, PortSpec};
//!
//! let client = Client::authenticate(AuthConfig::Password(PasswordAuth {
//!     auth_url: "http://127.0.0.1:9517/identity/v3".into(),
//!     username: "alice".into(),
//!     password: "s3cret".into(),
//!     project_name: "demo".into(),
//!     user_domain_name: "Default".into(),
//!     project_domain_name: "Default".into(),
//!     region_name: None,
//!     interface: None,
//!     endpoint_override: None,
//! }))
//! .await?;
//! let body = CreateContainer {
//!     image: "nginx".into(),
//!     published_ports: Some(vec![PortSpec::parse("pub:8080:80").expect("valid spec")]),
//!     ..Default::default()
//! };
//! let view = client.create_container(&body, true).await?;
//! println!("{} is {}", view.uuid, view.status);
//! # Ok(())
//! # }
//! ```
//!
//! Modules:
//! - [`client`] — [`Client`], one method per API route.
//! - [`auth`] — [`AuthConfig`], the Keystone v3 token request and catalog lookup.
//! - [`container`] — the container view and request bodies, and the types that parse
//!   user input ([`PortSpec`], [`RestartPolicy`], [`MemoryMib`], [`KeyValue`]).
//! - [`capsule`] — capsules (pods): template files, the capsule view and its records.
//! - [`docker`] — client certificates for the Docker-compatible endpoint.
//! - [`hosts`] — hosts (administrators) and a project's own instances.
//! - [`identity`] — projects, users, roles, role assignments and the catalog (Keystone
//!   v3), with names or ids.
//! - [`clouds`] — clouds.yaml.
//! - [`output`] — python-openstackclient's output formats.
//! - [`shell`] — splitting `--cmd` like a shell.
//! - [`cli`] — the `osc` command line.
//!
//! Nothing in the library reads the environment: the `osc` binary gathers OS_* variables
//! (through clap) and the clouds.yaml directories and passes them in.

#![warn(missing_docs)]

pub mod auth;
pub mod capsule;
pub mod cli;
pub mod client;
pub mod clouds;
pub mod container;
pub mod docker;
pub mod error;
pub mod hosts;
pub mod identity;
pub mod output;
pub mod shell;

pub use auth::{AuthConfig, PasswordAuth, TokenInfo};
pub use client::Client;
pub use container::{
    ContainerStatus, ContainerView, CreateContainer, DeleteOptions, KeyValue, LogsOptions,
    MemoryMib, PortSpec, PublishedPort, RestartPolicy, UpdateContainer,
};
pub use error::{ApiErrorBody, ClientError};
