//! TLS for tests that play the relay: a CA made per test, the relay's server side, and
//! the agent's client certificate naming its instance, as `berth up` makes them.

use std::time::Duration;

use uuid::Uuid;

const DAY: Duration = Duration::from_secs(86_400);

/// A test deployment's CA, with the relay's TLS made by it for 127.0.0.1.
pub struct TestPki {
    ca: berth_tls::Ca,
    pub server: berth_tls::ServerTls,
}

impl TestPki {
    pub fn new() -> TestPki {
        let ca = berth_tls::Ca::generate("test CA", DAY).expect("a CA");
        let relay = ca
            .server_certificate(&["127.0.0.1".to_owned()], DAY)
            .expect("the relay's certificate");
        let server = berth_tls::ServerTls::from_pem(ca.pem(), &relay.cert_pem, &relay.key_pem)
            .expect("the relay's TLS");
        TestPki { ca, server }
    }

    /// The agent's TLS for `instance`.
    pub fn agent(&self, instance: Uuid) -> berth_tls::ClientTls {
        let made = self
            .ca
            .identity_certificate(berth_tls::Identity::Instance(instance), DAY)
            .expect("the agent's certificate");
        berth_tls::ClientTls::from_pem(self.ca.pem(), &made.cert_pem, &made.key_pem)
            .expect("the agent's TLS")
    }

    /// The TLS handshake on an accepted connection, as the relay does it; the
    /// identity the agent's certificate names.
    pub async fn accept(
        &self,
        tcp: tokio::net::TcpStream,
    ) -> (berth_tls::ServerStream, berth_tls::Identity) {
        let (stream, identity) = self.server.accept(tcp).await.expect("the TLS handshake");
        (
            stream,
            identity.expect("the agent presents a Berth certificate"),
        )
    }
}
