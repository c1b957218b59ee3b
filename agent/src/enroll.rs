//! Getting a credential: from the settings, from the credential file a previous run
//! wrote, or by enrolling with a one-time token.
//!
//! A new instance's agent is given an enrollment token (cloud-init `user_data`, or an
//! agent container's environment) rather than a credential. It trades the token once at
//! the service's `POST /agents/enroll` for a credential bound to its instance, and
//! keeps the credential in a file (mode 0600) so that after a restart it reconnects
//! without a token, which by then is used up.
//!
//! With the token it sends a CSR for a TLS key it makes itself: the answer carries a
//! client certificate naming its instance and the deployment's CA certificate. Key,
//! certificate and CA are kept in the same 0600 file; the key never leaves the
//! instance.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use berth_proto::enroll::{EnrollError, EnrollRequest, EnrollResponse, ENROLL_PATH};
use uuid::Uuid;

/// How long the agent keeps trying to reach the service to enroll before giving up
/// (an instance may boot before its network, or the service may be restarting).
const ENROLL_DEADLINE: Duration = Duration::from_secs(600);

/// Where an agent's credential can come from, in the order tried.
#[derive(Clone, Default)]
pub struct CredentialSource {
    /// A credential given outright.
    pub credential: Option<String>,
    /// A file holding the credential of an earlier enrollment; written after enrolling.
    pub credential_file: Option<PathBuf>,
    /// A one-time enrollment token.
    pub enrollment_token: Option<String>,
    /// The service's base URL, e.g. `http://berth.example:9517`, for enrolling.
    pub service_url: Option<String>,
}

impl std::fmt::Debug for CredentialSource {
    // Written by hand so that neither secret reaches a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialSource")
            .field(
                "credential",
                &self.credential.as_ref().map(|_| "<redacted>"),
            )
            .field("credential_file", &self.credential_file)
            .field(
                "enrollment_token",
                &self.enrollment_token.as_ref().map(|_| "<redacted>"),
            )
            .field("service_url", &self.service_url)
            .finish()
    }
}

/// A credential, and the relay URL the service named when it was enrolled for.
pub struct Obtained {
    /// The bearer credential for the relay.
    pub credential: String,
    /// The relay URL from the enrollment answer (None when none took place).
    pub relay_url: Option<String>,
    /// The service's command-signing key from the enrollment answer (None when none
    /// took place, or the answer was stored by an agent older than signed commands).
    pub service_key: Option<String>,
    /// The TLS identity from the enrollment (None when none took place).
    pub tls: Option<TlsPem>,
}

/// An agent's TLS material, PEM.
#[derive(Clone)]
pub struct TlsPem {
    /// The deployment's CA certificate: the relay's certificate must chain to it.
    pub ca_pem: String,
    /// The agent's client certificate, naming its instance.
    pub cert_pem: String,
    /// Its private key. Never logged.
    pub key_pem: String,
}

impl std::fmt::Debug for TlsPem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsPem")
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

/// What the credential file holds: the enrollment answer and the TLS key the agent
/// made for it.
#[derive(serde::Serialize, serde::Deserialize)]
struct Stored {
    #[serde(flatten)]
    answer: EnrollResponse,
    tls_key: String,
}

impl Stored {
    fn obtained(self) -> Obtained {
        let answer = self.answer;
        Obtained {
            tls: Some(TlsPem {
                ca_pem: answer.ca_certificate,
                cert_pem: answer.certificate,
                key_pem: self.tls_key,
            }),
            credential: answer.credential,
            relay_url: Some(answer.relay_url),
            service_key: Some(answer.command_key).filter(|k| !k.trim().is_empty()),
        }
    }
}

impl CredentialSource {
    /// The credential to use: the one given, else the stored one, else a new one from
    /// enrolling with the token (stored when a credential file is set).
    pub async fn obtain(&self, instance: Uuid) -> anyhow::Result<Obtained> {
        if let Some(credential) = &self.credential {
            return Ok(Obtained {
                credential: credential.clone(),
                relay_url: None,
                service_key: None,
                tls: None,
            });
        }
        if let Some(path) = &self.credential_file {
            if let Some(stored) = read_credential(path)? {
                tracing::info!(instance.id = %instance, file = %path.display(), "using the credential stored by an earlier enrollment");
                return Ok(stored);
            }
        }
        let (Some(token), Some(service_url)) = (&self.enrollment_token, &self.service_url) else {
            bail!(
                "no credential: give one (credential / BERTH_AGENT_CREDENTIAL), or an enrollment token \
                 (enrollment_token / BERTH_AGENT_ENROLLMENT_TOKEN) and the service's URL \
                 (service_url / BERTH_AGENT_SERVICE_URL) to enroll with"
            );
        };
        let (key_pem, csr) = berth_tls::new_key_and_csr()?;
        let answer = enroll(service_url, instance, token, &csr).await?;
        let stored = Stored {
            answer,
            tls_key: key_pem,
        };
        if let Some(path) = &self.credential_file {
            write_credential(path, &stored)?;
        }
        tracing::info!(instance.id = %instance, "enrolled with the service");
        Ok(stored.obtained())
    }
}

/// Trade `token` and the CSR `csr` (PEM) for a credential and a client certificate at
/// the service. Retries while the service cannot be reached or answers 5xx; a refusal
/// (the token is unknown, used, expired or for another instance) ends it at once with
/// the service's reason.
pub async fn enroll(
    service_url: &str,
    instance: Uuid,
    token: &str,
    csr: &str,
) -> anyhow::Result<EnrollResponse> {
    let url = format!("{}{ENROLL_PATH}", service_url.trim_end_matches('/'));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .context("cannot build an HTTP client")?;
    let body = EnrollRequest {
        instance,
        token: token.to_owned(),
        csr: csr.to_owned(),
    };
    let deadline = tokio::time::Instant::now() + ENROLL_DEADLINE;
    let mut backoff = Duration::from_millis(200);
    loop {
        let why = match client.post(&url).json(&body).send().await {
            Ok(response) if response.status().is_success() => {
                return response
                    .json::<EnrollResponse>()
                    .await
                    .with_context(|| format!("the answer of {url} is not an enrollment answer"));
            }
            Ok(response) if response.status().is_client_error() => {
                let status = response.status();
                let reason = response
                    .json::<EnrollError>()
                    .await
                    .map(|e| e.error)
                    .unwrap_or_else(|_| "no reason given".to_owned());
                return Err(anyhow!(
                    "the service refused the enrollment of instance {instance} ({status}): {reason}"
                ));
            }
            Ok(response) => format!("{} answered {}", url, response.status()),
            Err(e) => format!("cannot reach {url}: {:#}", anyhow::Error::new(e)),
        };
        if tokio::time::Instant::now() + backoff > deadline {
            bail!(
                "could not enroll within {} s: {why}; check that service_url points at the Berth service",
                ENROLL_DEADLINE.as_secs()
            );
        }
        tracing::warn!(instance.id = %instance, reason = %why, "enrollment failed; retrying");
        let jitter = rand::random::<u64>() % (backoff.as_millis() as u64 / 2 + 1);
        tokio::time::sleep(backoff + Duration::from_millis(jitter)).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// The stored enrollment answer: JSON `{"credential": ..., "relay_url": ..., "tls_key":
/// ...}` as written by [`write_credential`], or a bare credential put there by hand.
fn read_credential(path: &Path) -> anyhow::Result<Option<Obtained>> {
    match std::fs::read_to_string(path) {
        Ok(text) if text.trim_start().starts_with('{') => serde_json::from_str::<Stored>(&text)
            .map(|stored| Some(stored.obtained()))
            .with_context(|| {
                format!(
                    "the credential file {} is not an enrollment answer with its TLS key \
                     (written by an older agent?); remove it and enroll with a new token",
                    path.display()
                )
            }),
        Ok(text) if !text.trim().is_empty() => Ok(Some(Obtained {
            credential: text.trim().to_owned(),
            relay_url: None,
            service_key: None,
            tls: None,
        })),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => {
            Err(e).with_context(|| format!("cannot read the credential file {}", path.display()))
        }
    }
}

/// Write the enrollment answer (the credential, the relay URL for an agent configured
/// without one, the TLS certificate, CA and key) readable by its owner only; via a
/// temporary file and a rename, so a crash never leaves half a credential.
fn write_credential(path: &Path, answer: &Stored) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot make the directory {}", dir.display()))?;
    }
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot write the credential file {}", tmp.display()))?;
    let text = serde_json::to_string(answer).expect("an enrollment answer serialises");
    file.write_all(text.as_bytes())
        .and_then(|_| file.sync_all())
        .with_context(|| format!("cannot write the credential file {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("cannot move the credential file into {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[tokio::test]
    async fn a_stored_credential_is_used_instead_of_enrolling_and_is_owner_only() {
        let dir = std::env::temp_dir().join(format!("berth-agent-cred-{}", Uuid::new_v4()));
        let path = dir.join("sub").join("credential");
        let answer = Stored {
            answer: EnrollResponse {
                credential: "stored-credential".into(),
                relay_url: "wss://relay:9518".into(),
                command_key: "stored-key".into(),
                certificate: "CERT".into(),
                ca_certificate: "CA".into(),
            },
            tls_key: "KEY".into(),
        };
        write_credential(&path, &answer).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let source = CredentialSource {
            credential_file: Some(path.clone()),
            enrollment_token: Some("used-up".into()),
            // Nothing listens here: enrolling would fail, so success shows the file won.
            service_url: Some("http://127.0.0.1:1".into()),
            ..Default::default()
        };
        let got = source.obtain(Uuid::new_v4()).await.unwrap();
        assert_eq!(got.credential, "stored-credential");
        assert_eq!(got.relay_url.as_deref(), Some("wss://relay:9518"));
        assert_eq!(got.service_key.as_deref(), Some("stored-key"));
        let tls = got
            .tls
            .expect("the TLS material is stored with the credential");
        assert_eq!(
            (
                tls.ca_pem.as_str(),
                tls.cert_pem.as_str(),
                tls.key_pem.as_str()
            ),
            ("CA", "CERT", "KEY")
        );
        // A bare credential written by hand is read too.
        std::fs::write(&path, "by-hand\n").unwrap();
        let got = source.obtain(Uuid::new_v4()).await.unwrap();
        assert_eq!(got.credential, "by-hand");
        assert!(got.relay_url.is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn without_credential_or_token_the_error_names_both_ways() {
        let err = CredentialSource::default()
            .obtain(Uuid::new_v4())
            .await
            .err()
            .expect("nothing to obtain a credential from");
        let text = err.to_string();
        assert!(
            text.contains("BERTH_AGENT_ENROLLMENT_TOKEN")
                && text.contains("BERTH_AGENT_CREDENTIAL"),
            "{text}"
        );
    }

    #[test]
    fn debug_output_never_contains_the_secrets() {
        let source = CredentialSource {
            credential: Some("secret-cred".into()),
            enrollment_token: Some("secret-token".into()),
            ..Default::default()
        };
        let shown = format!("{source:?}");
        assert!(!shown.contains("secret-"), "{shown}");
    }
}
