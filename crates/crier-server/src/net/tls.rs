//! TLS on a listener (`http_server.tls`): rustls with the ring provider,
//! chosen explicitly. The acceptor can be swapped at run time
//! ([`Tls::reload`], on SIGHUP): a renewed certificate is used by the
//! connections accepted afterwards, and the open ones keep theirs.

use std::io;
use std::sync::{Arc, RwLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio_rustls::TlsAcceptor;

use crate::config::TlsConfig;

/// A listener's TLS: the acceptor in use, swapped whole by a reload.
pub(crate) struct Tls {
    acceptor: RwLock<TlsAcceptor>,
}

/// Why a certificate, key or CA could not be used.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {why}")]
pub struct TlsError {
    /// The configuration key at fault.
    pub key: &'static str,
    /// What is wrong with it.
    pub why: String,
}

fn fail(key: &'static str, why: impl ToString) -> TlsError {
    TlsError {
        key,
        why: why.to_string(),
    }
}

fn read(key: &'static str, value: &str) -> Result<Vec<u8>, TlsError> {
    TlsConfig::pem(value).map_err(|e: io::Error| fail(key, format!("cannot read {value}: {e}")))
}

/// The rustls configuration `cfg` describes: its certificate chain and
/// key, and, with `client_ca_pem`, client certificates required.
pub(crate) fn server_config(cfg: &TlsConfig) -> Result<ServerConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(&read("http_server.tls.cert_pem", &cfg.cert_pem)?)
            .collect::<Result<_, _>>()
            .map_err(|e| fail("http_server.tls.cert_pem", format!("not a PEM certificate: {e}")))?;
    if certs.is_empty() {
        return Err(fail("http_server.tls.cert_pem", "no CERTIFICATE block in it"));
    }
    let key = PrivateKeyDer::from_pem_slice(&read("http_server.tls.key_pem", cfg.key_pem.expose())?)
        .map_err(|e| fail("http_server.tls.key_pem", format!("no private key in it: {e}")))?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| fail("http_server.tls", e))?;
    let builder = if cfg.client_ca_pem.is_empty() {
        builder.with_no_client_auth()
    } else {
        let mut roots = RootCertStore::empty();
        for ca in CertificateDer::pem_slice_iter(&read("http_server.tls.client_ca_pem", &cfg.client_ca_pem)?)
        {
            let ca = ca.map_err(|e| {
                fail(
                    "http_server.tls.client_ca_pem",
                    format!("not a PEM certificate: {e}"),
                )
            })?;
            roots
                .add(ca)
                .map_err(|e| fail("http_server.tls.client_ca_pem", e))?;
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| fail("http_server.tls.client_ca_pem", e))?;
        builder.with_client_cert_verifier(verifier)
    };
    let mut config = builder.with_single_cert(certs, key).map_err(|e| {
        fail(
            "http_server.tls.key_pem",
            format!("does not match the certificate: {e}"),
        )
    })?;
    // HTTP/1.1 only (WebSocket upgrades need it).
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

impl Tls {
    /// Loads `cfg`'s certificate and key; `None` when TLS is off.
    pub(crate) fn new(cfg: &TlsConfig) -> Result<Option<Self>, TlsError> {
        if !cfg.enabled {
            return Ok(None);
        }
        let config = server_config(cfg)?;
        Ok(Some(Tls {
            acceptor: RwLock::new(TlsAcceptor::from(Arc::new(config))),
        }))
    }

    /// The acceptor for the next connection.
    pub(crate) fn acceptor(&self) -> TlsAcceptor {
        self.acceptor.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Reads `cfg`'s files again and uses them for new connections; on an
    /// error the current ones stay.
    pub(crate) fn reload(&self, cfg: &TlsConfig) -> Result<(), TlsError> {
        let config = server_config(cfg)?;
        *self.acceptor.write().unwrap_or_else(|e| e.into_inner()) = TlsAcceptor::from(Arc::new(config));
        Ok(())
    }
}
