//! Berth's agent: runs inside each instance, dials the relay, and drives the local
//! Docker engine on the service's behalf.
//!
//! - [`runtime`] is the bollard boundary: it executes each [`berth_proto::Command`] and
//!   observes the containers labelled for this instance.
//! - [`pods`] is the agent-side kubelet: pod specs kept on the agent's disk and
//!   reconciled continuously, with or without the relay.
//! - `relay_link` keeps one WebSocket to the relay: the full state first, then replies
//!   and numbered events, reconnecting with backoff whenever the connection drops.
//!
//! The library reads no configuration file or flag and binds nothing (the one exception:
//! with no engine address it takes bollard's `DOCKER_HOST` default); `main.rs` (and the all-in-one
//! `berth up`) build [`AgentSettings`] and call [`Agent::connect`] then
//! [`Agent::run_until_stopped`].

#![warn(missing_docs)]

pub mod enroll;
pub mod pods;
mod relay_link;
pub mod runtime;

use uuid::Uuid;

pub use enroll::CredentialSource;
pub use pods::PodSettings;
pub use runtime::Runtime;

/// What an agent needs to know to run.
#[derive(Clone)]
pub struct AgentSettings {
    /// Base URL of the relay, for example `wss://127.0.0.1:9518`, or of several relays
    /// separated by commas (`wss://a:9518,wss://b:9518`): the agent connects to any one,
    /// starting with a random one and moving to the next when a connection is lost.
    /// The agent appends [`berth_proto::RELAY_AGENT_PATH`] to each.
    pub relay_url: String,
    /// Bearer credential presented on the WebSocket upgrade. Never logged.
    pub credential: String,
    /// The deployment's CA (the relay's certificate must chain to it) and the agent's
    /// client certificate naming its instance (`urn:berth:instance:<uuid>`): from
    /// enrollment, or from `register-host --agent-tls-dir`.
    pub tls: berth_tls::ClientTls,
    /// The service's public key (PEM `BEGIN PUBLIC KEY`, or its one-line base64 body):
    /// the agent runs only commands and streams signed with it. It comes with the
    /// enrollment answer, from `berth-service relay-key`, or from `register-host`.
    pub service_key: String,
    /// The instance this agent acts for; it manages only containers labelled with it.
    pub instance: Uuid,
    /// The Docker engine: `None` for bollard's local defaults (`DOCKER_HOST`, else
    /// `/var/run/docker.sock`), or a `unix://`/`tcp://` URL or a socket path.
    pub docker_host: Option<String>,
    /// The kubelet: state directory, crash-loop backoff, infra image.
    pub pods: PodSettings,
}

impl std::fmt::Debug for AgentSettings {
    // Written by hand so that the credential never reaches a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentSettings")
            .field("relay_url", &self.relay_url)
            .field("credential", &"<redacted>")
            .field("instance", &self.instance)
            .field("docker_host", &self.docker_host)
            .field("pods", &self.pods)
            .finish()
    }
}

/// An agent connected to its Docker engine, ready to serve the relay.
#[derive(Debug)]
pub struct Agent {
    link: relay_link::LinkSettings,
    /// Signature checks and retry outcomes, for every connection of this agent.
    guard: std::sync::Arc<relay_link::CommandGuard>,
    runtime: Runtime,
    /// Stops the pod workers when the agent goes away.
    _pods: pods::KubeletGuard,
}

impl Agent {
    /// Check the settings and connect to the Docker engine, agreeing on an API version.
    ///
    /// Fails with a sentence saying what to fix when the relay URL is unusable or the
    /// engine cannot be reached. Does not contact the relay: that happens, and is
    /// retried, in [`Agent::run_until_stopped`].
    pub async fn connect(settings: AgentSettings) -> anyhow::Result<Agent> {
        let link = relay_link::LinkSettings::new(
            &settings.relay_url,
            settings.credential,
            settings.instance,
        )?
        .with_tls(settings.tls);
        anyhow::ensure!(
            !settings.service_key.trim().is_empty(),
            "no service key: the agent runs only commands signed by the Berth service, so it \
             needs the service's public key (service_key_file / BERTH_AGENT_SERVICE_KEY_FILE, \
             BERTH_AGENT_SERVICE_KEY, or enroll, whose answer carries it)"
        );
        let guard = std::sync::Arc::new(relay_link::CommandGuard::new(
            &settings.service_key,
            settings.instance,
            &link.credential,
        )?);
        let runtime = Runtime::connect(settings.docker_host.as_deref(), settings.instance).await?;
        // Pods are reconciled from here on, whether or not the relay is reachable.
        let pods = runtime.start_pods(settings.pods).await?;
        Ok(Agent {
            link,
            guard,
            runtime,
            _pods: pods,
        })
    }

    /// The instance this agent acts for.
    pub fn instance(&self) -> Uuid {
        self.link.instance
    }

    /// The agent's view of its Docker engine, for callers that want to run commands
    /// directly (tests, diagnostics).
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// Serve the relay forever: connect, report state (and every pod's status),
    /// execute commands and report events; after any disconnect or refusal, reconnect
    /// with jittered exponential backoff (200 ms doubling to 5 s). Pods are reconciled
    /// meanwhile, connected or not. It never returns on its own: to stop the
    /// agent, drop the future or abort its task.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        relay_link::run_forever(self.link, self.runtime, self.guard).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_of_settings_never_contains_the_credential() {
        let settings = AgentSettings {
            relay_url: "wss://relay:9518".to_owned(),
            credential: "very-secret".to_owned(),
            tls: test_tls(),
            service_key: String::new(),
            instance: Uuid::nil(),
            docker_host: None,
            pods: PodSettings::default(),
        };
        let shown = format!("{settings:?}");
        assert!(!shown.contains("very-secret"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
        assert!(!shown.contains("PRIVATE KEY"), "{shown}");
    }

    fn test_tls() -> berth_tls::ClientTls {
        let day = std::time::Duration::from_secs(86_400);
        let ca = berth_tls::Ca::generate("test", day).unwrap();
        let cert = ca
            .identity_certificate(berth_tls::Identity::Instance(Uuid::nil()), day)
            .unwrap();
        berth_tls::ClientTls::from_pem(ca.pem(), &cert.cert_pem, &cert.key_pem).unwrap()
    }
}
