//! TLS for PostgreSQL connections with rustls, following libpq's `sslmode` meanings.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use serde::{Deserialize, Serialize};

use crate::Error;

/// How a connection uses TLS (libpq's `sslmode`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SslMode {
    /// Plain TCP only.
    Disable,
    /// TLS when the server offers it, without certificate verification; plain otherwise.
    #[default]
    Prefer,
    /// TLS required, without certificate verification (encryption, not authentication).
    Require,
    /// TLS required; the certificate must chain to a trusted root (the `ca_file`, or the
    /// bundled Mozilla roots) and name the host.
    VerifyFull,
}

/// The rustls client configuration for `mode`, or `None` for [`SslMode::Disable`].
///
/// The crypto provider (ring) is chosen explicitly rather than through a process-wide
/// default, which rustls 0.23 would otherwise demand at run time.
///
/// # Errors
/// [`Error::Settings`] when the CA file cannot be read or holds no certificate.
pub fn client_config(mode: SslMode, ca_file: Option<&Path>) -> Result<Option<ClientConfig>, Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Settings(e.to_string()))?;
    let config = match mode {
        SslMode::Disable => return Ok(None),
        SslMode::Prefer | SslMode::Require => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(EncryptOnly(provider)))
            .with_no_client_auth(),
        SslMode::VerifyFull => {
            let mut roots = RootCertStore::empty();
            match ca_file {
                Some(path) => {
                    let pem = std::fs::read(path).map_err(|e| {
                        Error::Settings(format!("cannot read CA file {}: {e}", path.display()))
                    })?;
                    let mut added = 0;
                    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
                        let cert = cert.map_err(|e| {
                            Error::Settings(format!(
                                "invalid certificate in {}: {e}",
                                path.display()
                            ))
                        })?;
                        roots.add(cert).map_err(|e| {
                            Error::Settings(format!("unusable CA in {}: {e}", path.display()))
                        })?;
                        added += 1;
                    }
                    if added == 0 {
                        return Err(Error::Settings(format!(
                            "no certificate found in {}",
                            path.display()
                        )));
                    }
                }
                None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
    };
    Ok(Some(config))
}

/// Accepts any server certificate but still checks the handshake signatures:
/// libpq's `prefer`/`require` semantics (protection from passive eavesdropping only).
#[derive(Debug)]
struct EncryptOnly(Arc<CryptoProvider>);

impl ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_build_the_expected_configs() {
        assert!(client_config(SslMode::Disable, None).unwrap().is_none());
        assert!(client_config(SslMode::Require, None).unwrap().is_some());
        assert!(client_config(SslMode::VerifyFull, None).unwrap().is_some());
    }

    #[test]
    fn unreadable_or_empty_ca_file_is_a_settings_error() {
        let err =
            client_config(SslMode::VerifyFull, Some(Path::new("/nonexistent/ca.pem"))).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/ca.pem"));
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("ca.pem");
        std::fs::write(&empty, "not a certificate").unwrap();
        assert!(
            client_config(SslMode::VerifyFull, Some(&empty))
                .unwrap_err()
                .to_string()
                .contains("no certificate")
        );
    }
}
