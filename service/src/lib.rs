//! Berth's API service.
//!
//! The service owns the database and serves the Zun-compatible REST API and the
//! embedded Keystone-compatible identity API. It never talks to Docker: every runtime
//! operation is a [`berth_proto::Command`] sent through a relay to the agent of the
//! container's instance ([`agents`]). [`lifecycle`] drives containers through their
//! states and [`reconciler`] folds what agents report back into the database.

pub mod agents;
pub mod api;
pub mod command_signing;
pub mod containers;
pub mod db;
pub mod docker_api;
pub mod domain;
pub mod enrollment;
pub mod identity;
pub mod instances_monitor;
pub mod lifecycle;
pub mod pki;
pub mod pods;
pub mod policy;
pub mod providers;
pub mod reconciler;
pub mod scheduler;
pub mod secrets;
pub mod settings;
pub mod startup;
pub mod state;
pub mod watch;

pub use settings::ServiceSettings;
pub use startup::Application;
