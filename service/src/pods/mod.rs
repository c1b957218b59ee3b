//! Pods (Zun capsules): [`manifest`] turns a template in any accepted format (Zun
//! capsule, Google container manifest v1beta1/v1beta2, Kubernetes v1 Pod) into one
//! [`berth_proto::pod::PodSpec`]; [`service`] creates, updates and deletes capsules and
//! hands their specs to the agents.

pub mod manifest;
pub mod service;
