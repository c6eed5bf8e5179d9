//! TLS on a listener: rustls with the ring provider, chosen explicitly,
//! from PEM bytes (where they come from is the caller's business). The
//! acceptor can be swapped at run time ([`Tls::replace`], on SIGHUP): a
//! renewed certificate is used by the connections accepted afterwards,
//! and the open ones keep theirs.

use std::sync::{Arc, RwLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio_rustls::TlsAcceptor;

/// A listener's TLS: the acceptor in use, swapped whole by a reload.
pub(crate) struct Tls {
    acceptor: RwLock<TlsAcceptor>,
}

/// The PEM inputs of a listener's TLS.
pub(crate) struct Pems<'a> {
    /// The certificate chain, leaf first.
    pub cert: &'a [u8],
    /// Its private key.
    pub key: &'a [u8],
    /// CAs whose client certificates are required, if any.
    pub client_ca: Option<&'a [u8]>,
}

/// Which input a [`TlsError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Part {
    /// The certificate chain.
    Cert,
    /// The private key.
    Key,
    /// The client CAs.
    ClientCa,
    /// The combination (no protocol version agreed, ...).
    Whole,
}

/// Why a certificate, key or CA could not be used.
#[derive(Debug)]
pub(crate) struct TlsError {
    /// The input at fault.
    pub part: Part,
    /// What is wrong with it.
    pub why: String,
}

fn fail(part: Part, why: impl ToString) -> TlsError {
    TlsError {
        part,
        why: why.to_string(),
    }
}

/// The rustls configuration for `pems`: the certificate chain and key,
/// and, with client CAs, client certificates required.
pub(crate) fn server_config(pems: &Pems<'_>) -> Result<ServerConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pems.cert)
        .collect::<Result<_, _>>()
        .map_err(|e| fail(Part::Cert, format!("not a PEM certificate: {e}")))?;
    if certs.is_empty() {
        return Err(fail(Part::Cert, "no CERTIFICATE block in it"));
    }
    let key = PrivateKeyDer::from_pem_slice(pems.key)
        .map_err(|e| fail(Part::Key, format!("no private key in it: {e}")))?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| fail(Part::Whole, e))?;
    let builder = match pems.client_ca {
        None => builder.with_no_client_auth(),
        Some(cas) => {
            let mut roots = RootCertStore::empty();
            for ca in CertificateDer::pem_slice_iter(cas) {
                let ca = ca.map_err(|e| fail(Part::ClientCa, format!("not a PEM certificate: {e}")))?;
                roots.add(ca).map_err(|e| fail(Part::ClientCa, e))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| fail(Part::ClientCa, e))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| fail(Part::Key, format!("does not match the certificate: {e}")))?;
    // HTTP/1.1 only (WebSocket upgrades need it).
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

impl Tls {
    /// A listener's TLS, serving `config`.
    pub(crate) fn new(config: ServerConfig) -> Self {
        Tls {
            acceptor: RwLock::new(TlsAcceptor::from(Arc::new(config))),
        }
    }

    /// The acceptor for the next connection.
    pub(crate) fn acceptor(&self) -> TlsAcceptor {
        self.acceptor.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Serves `config` to the connections accepted from now on.
    pub(crate) fn replace(&self, config: ServerConfig) {
        *self.acceptor.write().unwrap_or_else(|e| e.into_inner()) = TlsAcceptor::from(Arc::new(config));
    }
}
