//! `rediss://`: a server started here with a certificate from a private
//! authority made here; the backend trusts that authority and nothing else.
#![cfg(feature = "tls")]

mod support;

use std::net::{IpAddr, Ipv4Addr};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use store_core::backend::{Batch, Op};
use store_core::{Backend, Payload};
use store_redis::RedisBackend;
use support::{RedisServer, free_port};

/// A private authority and a certificate for 127.0.0.1 it signed, as PEM:
/// (authority, certificate, key).
fn certificates() -> (String, String, String) {
    let ca_key = KeyPair::generate().expect("a key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("parameters");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "store-redis test CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params.self_signed(&ca_key).expect("the authority");
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().expect("a key");
    let mut params = CertificateParams::new(vec!["localhost".to_owned()]).expect("parameters");
    params
        .subject_alt_names
        .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    params
        .distinguished_name
        .push(DnType::CommonName, "redis-server");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.signed_by(&key, &issuer).expect("the certificate");
    (ca_cert.pem(), cert.pem(), key.serialize_pem())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_with_a_private_authority() {
    let (ca, cert, key) = certificates();
    let dir = tempfile::tempdir().expect("a directory");
    let write = |name: &str, pem: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, pem).expect("written");
        path.to_string_lossy().into_owned()
    };
    let (ca_file, cert_file, key_file) = (
        write("ca.crt", &ca),
        write("server.crt", &cert),
        write("server.key", &key),
    );
    let tls_port = free_port().to_string();
    let _server = RedisServer::start_with_args(&[
        "--tls-port",
        &tls_port,
        "--tls-cert-file",
        &cert_file,
        "--tls-key-file",
        &key_file,
        "--tls-ca-cert-file",
        &ca_file,
        "--tls-auth-clients",
        "no",
    ]);
    let url = format!("rediss://127.0.0.1:{tls_port}");
    let backend = RedisBackend::builder(&url, "tls")
        .tls_root_certificates(ca.as_bytes())
        .build()
        .await
        .expect("connects over TLS, trusting the private authority");
    let applied = backend
        .apply(Batch {
            ops: vec![Op::put("a", Payload::from("1"))],
            atomic: false,
        })
        .await
        .expect("write over TLS");
    let mut watch = backend
        .watch(store_core::Revision(applied.revision.0 - 1))
        .await
        .expect("watch over TLS");
    let event = futures_util::StreamExt::next(&mut watch).await;
    assert!(
        matches!(
            event,
            Some(Ok(store_core::backend::WatchEvent::Changes { .. }))
        ),
        "{event:?}"
    );
    // Without the authority, the platform's roots do not trust the server.
    let untrusted = RedisBackend::builder(&url, "tls")
        .connect_timeout(std::time::Duration::from_millis(500))
        .build()
        .await;
    assert!(untrusted.is_err(), "an unknown authority is refused");
}
