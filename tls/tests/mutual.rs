//! Real TLS handshakes over loopback between a [`ServerTls`] and [`ClientTls`]s.

use std::time::Duration;

use berth_tls::{Ca, ClientTls, Identity, IdentityError, ServerTls, Subject};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use uuid::Uuid;

const DAY: Duration = Duration::from_secs(24 * 3600);

fn ca() -> Ca {
    Ca::generate("test CA", DAY).unwrap()
}

fn server(ca: &Ca) -> ServerTls {
    let cert = ca
        .server_certificate(&["localhost".into(), "127.0.0.1".into()], DAY)
        .unwrap();
    ServerTls::from_pem(ca.pem(), &cert.cert_pem, &cert.key_pem).unwrap()
}

fn client(trusted: &Ca, issuer: &Ca, identity: Identity) -> ClientTls {
    let cert = issuer.identity_certificate(identity, DAY).unwrap();
    ClientTls::from_pem(trusted.pem(), &cert.cert_pem, &cert.key_pem).unwrap()
}

/// Handshake `client` with `server` on loopback as `name`: the client's result, and
/// the identity the server read (None when its handshake failed).
async fn handshake(
    server: &ServerTls,
    client: &ClientTls,
    name: &str,
) -> (std::io::Result<()>, Option<Result<Identity, IdentityError>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = server.clone();
    let accept = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        match server.accept(tcp).await {
            Ok((mut stream, identity)) => {
                let _ = stream.write_all(b"ok").await;
                let _ = stream.shutdown().await;
                Some(identity)
            }
            Err(_) => None,
        }
    });
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from(name.to_owned()).unwrap();
    let result = async {
        let mut stream = tokio_rustls::TlsConnector::from(client.config())
            .connect(name, tcp)
            .await?;
        // TLS 1.3 reports a refused client certificate only on the first read.
        let mut buf = Vec::new();
        stream.read_to_end(&mut buf).await?;
        if buf != b"ok" {
            return Err(std::io::Error::other("the server said nothing"));
        }
        Ok(())
    }
    .await;
    (result, accept.await.unwrap())
}

#[tokio::test]
async fn an_agent_certificate_of_the_ca_is_accepted_and_names_its_instance() {
    let ca = ca();
    let instance = Uuid::new_v4();
    let (ok, identity) = handshake(
        &server(&ca),
        &client(&ca, &ca, Identity::Instance(instance)),
        "127.0.0.1",
    )
    .await;
    ok.unwrap();
    assert_eq!(identity, Some(Ok(Identity::Instance(instance))));
    let (ok, identity) = handshake(
        &server(&ca),
        &client(&ca, &ca, Identity::Service),
        "localhost",
    )
    .await;
    ok.unwrap();
    assert_eq!(identity, Some(Ok(Identity::Service)));
}

#[tokio::test]
async fn a_client_certificate_of_another_ca_is_refused_by_the_server() {
    let (ca, other) = (ca(), ca());
    let (ok, identity) = handshake(
        &server(&ca),
        &client(&ca, &other, Identity::Service),
        "localhost",
    )
    .await;
    assert!(ok.is_err(), "the handshake must fail");
    assert_eq!(identity, None, "the server must not accept it");
}

#[tokio::test]
async fn a_server_certificate_of_another_ca_is_refused_by_the_client() {
    let (ca, other) = (ca(), ca());
    // The client trusts `ca`, the server's certificate is `other`'s.
    let (ok, _) = handshake(
        &server(&other),
        &client(&ca, &other, Identity::Service),
        "localhost",
    )
    .await;
    let err = ok.unwrap_err();
    assert!(
        err.to_string().contains("UnknownIssuer") || err.to_string().contains("certificate"),
        "{err}"
    );
}

#[tokio::test]
async fn a_server_certificate_for_another_name_is_refused_by_the_client() {
    let ca = ca();
    let (ok, _) = handshake(
        &server(&ca),
        &client(&ca, &ca, Identity::Service),
        "relay.example",
    )
    .await;
    assert!(ok.is_err());
}

#[tokio::test]
async fn a_client_without_a_certificate_is_refused() {
    let ca = ca();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der().clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = server(&ca);
    let accept = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        server.accept(tcp).await.is_ok()
    });
    let tcp = TcpStream::connect(addr).await.unwrap();
    let result = async {
        let mut s = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
            .connect(
                rustls::pki_types::ServerName::try_from("localhost").unwrap(),
                tcp,
            )
            .await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await
    }
    .await;
    assert!(result.is_err());
    assert!(!accept.await.unwrap());
}

#[test]
fn a_certificate_from_a_csr_names_only_what_the_ca_chose() {
    let ca = ca();
    let (key, csr) = berth_tls::new_key_and_csr().unwrap();
    let instance = Uuid::new_v4();
    let issued = ca
        .sign_csr(&csr, Subject::Identity(Identity::Instance(instance)), DAY)
        .unwrap();
    assert_eq!(Identity::of(&issued.der), Ok(Identity::Instance(instance)));
    // The key of the CSR matches the certificate.
    ClientTls::from_pem(ca.pem(), &issued.pem, &key).unwrap();
    // A Docker-style certificate for a person names no Berth identity.
    let person = ca
        .sign_csr(
            &csr,
            Subject::Named {
                common_name: "alice",
                organization: Some("demo"),
            },
            DAY,
        )
        .unwrap();
    assert_eq!(Identity::of(&person.der), Err(IdentityError::Missing));
    assert!(ca
        .sign_csr("garbage", Subject::Identity(Identity::Service), DAY)
        .is_err());
}

#[test]
fn a_generated_ca_is_kept_with_an_owner_only_key_and_reloaded_the_same() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let first = Ca::load_or_create(dir.path(), "test").unwrap();
    let mode = std::fs::metadata(dir.path().join(Ca::KEY_FILE))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let again = Ca::load_or_create(dir.path(), "test").unwrap();
    assert_eq!(first.pem(), again.pem());
}
