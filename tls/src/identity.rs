//! Who a client certificate belongs to.

use rustls::pki_types::CertificateDer;
use uuid::Uuid;
use x509_parser::extensions::GeneralName;

const INSTANCE_PREFIX: &str = "urn:berth:instance:";
const SERVICE_URI: &str = "urn:berth:service";

/// The holder of a Berth client certificate, as its URI subject alternative name says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Identity {
    /// The agent of one instance: `urn:berth:instance:<uuid>`.
    Instance(Uuid),
    /// The Berth service: `urn:berth:service`.
    Service,
}

/// Why a certificate names no Berth identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// The peer presented no certificate.
    #[error("no client certificate was presented")]
    NoCertificate,
    /// The certificate could not be parsed.
    #[error("the client certificate could not be parsed: {0}")]
    Unparsable(String),
    /// No `urn:berth:` URI in its subject alternative names.
    #[error("the client certificate names no Berth agent or service (no urn:berth: URI subject alternative name)")]
    Missing,
    /// More than one, or one Berth cannot read.
    #[error("the client certificate names {0}, which is not one Berth identity")]
    Ambiguous(String),
}

impl Identity {
    /// The URI that names this identity in a certificate.
    pub fn uri(&self) -> String {
        match self {
            Identity::Instance(id) => format!("{INSTANCE_PREFIX}{id}"),
            Identity::Service => SERVICE_URI.to_owned(),
        }
    }

    /// Reads a URI written by [`Identity::uri`]; `None` for any other URI.
    pub fn from_uri(uri: &str) -> Option<Identity> {
        if uri == SERVICE_URI {
            return Some(Identity::Service);
        }
        let id = uri.strip_prefix(INSTANCE_PREFIX)?;
        Uuid::parse_str(id).ok().map(Identity::Instance)
    }

    /// The identity an end-entity certificate names: exactly one `urn:berth:` URI in
    /// its subject alternative names. The certificate must already be verified
    /// (chain, validity, usage); this only reads it.
    pub fn of(cert: &CertificateDer<'_>) -> Result<Identity, IdentityError> {
        let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref())
            .map_err(|e| IdentityError::Unparsable(e.to_string()))?;
        let san = parsed
            .subject_alternative_name()
            .map_err(|e| IdentityError::Unparsable(e.to_string()))?;
        let uris: Vec<&str> = san
            .iter()
            .flat_map(|san| san.value.general_names.iter())
            .filter_map(|name| match name {
                GeneralName::URI(uri) if uri.starts_with("urn:berth:") => Some(*uri),
                _ => None,
            })
            .collect();
        match uris.as_slice() {
            [] => Err(IdentityError::Missing),
            [one] => {
                Identity::from_uri(one).ok_or_else(|| IdentityError::Ambiguous(one.to_string()))
            }
            many => Err(IdentityError::Ambiguous(many.join(", "))),
        }
    }

    /// Of the first certificate of a chain (the end entity).
    pub fn of_chain(chain: Option<&[CertificateDer<'_>]>) -> Result<Identity, IdentityError> {
        match chain.and_then(|c| c.first()) {
            Some(cert) => Identity::of(cert),
            None => Err(IdentityError::NoCertificate),
        }
    }
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.uri())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_round_trip_and_others_are_not_identities() {
        let id = Uuid::new_v4();
        assert_eq!(
            Identity::from_uri(&Identity::Instance(id).uri()),
            Some(Identity::Instance(id))
        );
        assert_eq!(
            Identity::from_uri(&Identity::Service.uri()),
            Some(Identity::Service)
        );
        assert_eq!(Identity::from_uri("urn:berth:instance:nope"), None);
        assert_eq!(Identity::from_uri("https://example.com"), None);
    }
}
