//! TLS for `mqtts://` and `wss://`: the server's certificate and key from PEM files, client
//! certificates checked against a CA when asked, and, for a lab that has no certificates, a local
//! CA and a server certificate for this machine made on first run.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use tokio_rustls::rustls::{self, RootCertStore, ServerConfig};

use super::files::{self, FileError};

/// Where the server's certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The server's certificate chain (PEM), leaf first.
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// CA certificates that client certificates are checked against (PEM).
    pub cafile: Option<PathBuf>,
    /// Refuse clients without a certificate the CA signed (Mosquitto's require_certificate).
    pub require_certificate: bool,
}

/// Why TLS cannot be set up. Each names the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{}: {message}", path.display())]
    File { path: PathBuf, message: String },
    #[error(transparent)]
    Write(#[from] FileError),
    #[error("{}: {message}", cert.display())]
    Config { cert: PathBuf, message: String },
}

fn file_error(path: &Path, message: impl ToString) -> TlsError {
    TlsError::File {
        path: path.to_owned(),
        message: message.to_string(),
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(path, format!("cannot read a certificate: {e}")))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(path, format!("not a PEM certificate: {e}")))?;
    if certs.is_empty() {
        return Err(file_error(path, "holds no PEM certificate"));
    }
    Ok(certs)
}

/// The server side of TLS, from the files.
pub fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = read_certs(&files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| file_error(&files.key, format!("not a PEM private key: {e}")))?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| file_error(&files.cert, e))?;
    let builder = match &files.cafile {
        Some(cafile) => {
            let mut roots = RootCertStore::empty();
            for ca in read_certs(cafile)? {
                roots
                    .add(ca)
                    .map_err(|e| file_error(cafile, format!("not a usable CA certificate: {e}")))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider(),
            );
            let verifier = if files.require_certificate {
                verifier.build()
            } else {
                verifier.allow_unauthenticated().build()
            }
            .map_err(|e| file_error(cafile, e))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Config {
            cert: files.cert.clone(),
            message: format!("does not go with the key {}: {e}", files.key.display()),
        })?;
    Ok(Arc::new(config))
}

/// The client side of TLS (a bridge to an `mqtts://` or `wss://` broker): the remote's
/// certificate must chain to `ca` (PEM), or, without one, to the system's trusted roots.
pub fn client_config(ca: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let mut roots = RootCertStore::empty();
    match ca {
        Some(ca) => {
            for cert in read_certs(ca)? {
                roots
                    .add(cert)
                    .map_err(|e| file_error(ca, format!("not a usable CA certificate: {e}")))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(file_error(
                    Path::new("system trust store"),
                    "no trusted root certificates found: give the bridge a ca_file",
                ));
            }
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| file_error(ca.unwrap_or(Path::new("TLS")), e))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The local CA and server certificate the app makes when none is given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalCa {
    /// The CA certificate a client trusts (`mosquitto_pub --cafile`, paho's `tls_set`).
    pub ca: PathBuf,
    /// SHA-256 of the CA certificate, as `AB:CD:...`, to compare on the client's machine.
    pub fingerprint: String,
    pub files: TlsFiles,
}

/// The local CA in `dir` (`ca.pem`, `server.pem`, `server-key.pem`), made on first use: a CA
/// and a certificate it signs for `localhost`, this host's name and the loopback addresses.
/// Files that are there are used as they are.
pub fn local_ca(dir: &Path) -> Result<LocalCa, TlsError> {
    let ca = dir.join("ca.pem");
    let cert = dir.join("server.pem");
    let key = dir.join("server-key.pem");
    if !(ca.exists() && cert.exists() && key.exists()) {
        make_local_ca(dir, &ca, &cert, &key)?;
    }
    let der = read_certs(&ca)?.remove(0);
    Ok(LocalCa {
        fingerprint: fingerprint(&der),
        ca,
        files: TlsFiles {
            cert,
            key,
            cafile: None,
            require_certificate: false,
        },
    })
}

fn make_local_ca(dir: &Path, ca: &Path, cert: &Path, key: &Path) -> Result<(), TlsError> {
    std::fs::create_dir_all(dir).map_err(|e| file_error(dir, e))?;
    let gen_error = |e: rcgen::Error| file_error(dir, format!("cannot make a certificate: {e}"));
    let ca_key = KeyPair::generate().map_err(gen_error)?;
    let mut ca_params = CertificateParams::default();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca_params.distinguished_name = name("mqtt-lab local CA");
    ca_params.not_before = rcgen::date_time_ymd(2025, 1, 1);
    ca_params.not_after = rcgen::date_time_ymd(2045, 1, 1);
    let ca_cert = ca_params.self_signed(&ca_key).map_err(gen_error)?;

    let mut names = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
    if let Some(host) = host_name() {
        names.push(host);
    }
    let server_key = KeyPair::generate().map_err(gen_error)?;
    let mut params = CertificateParams::new(names).map_err(gen_error)?;
    params.distinguished_name = name("mqtt-lab");
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.not_before = rcgen::date_time_ymd(2025, 1, 1);
    params.not_after = rcgen::date_time_ymd(2045, 1, 1);
    let issuer = Issuer::new(ca_params, &ca_key);
    let server_cert = params.signed_by(&server_key, &issuer).map_err(gen_error)?;

    // The CA's key is not kept: nothing else is ever signed with it.
    files::write_atomic_private(key, server_key.serialize_pem().as_bytes())?;
    files::write_atomic(cert, server_cert.pem().as_bytes())?;
    files::write_atomic(ca, ca_cert.pem().as_bytes())?;
    Ok(())
}

fn name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn
}

/// This machine's host name, where the system says it.
fn host_name() -> Option<String> {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())?;
    let host = raw.trim();
    (!host.is_empty() && host != "localhost").then(|| host.to_owned())
}

/// SHA-256 of a certificate, as `openssl x509 -fingerprint -sha256` prints it.
pub fn fingerprint(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_local_ca_is_made_once_and_its_server_certificate_loads() {
        let dir = tempfile::tempdir().unwrap();
        let first = local_ca(dir.path()).unwrap();
        assert_eq!(first.fingerprint.len(), 32 * 3 - 1);
        server_config(&first.files).unwrap();
        let again = local_ca(dir.path()).unwrap();
        assert_eq!(again, first, "made once, then reused");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&first.files.key)
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "the key is its owner's only");
        }
    }

    #[test]
    fn bad_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let good = local_ca(&dir.path().join("a")).unwrap();
        let other = local_ca(&dir.path().join("b")).unwrap();
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate").unwrap();
        let with = |cert: &Path, key: &Path| TlsFiles {
            cert: cert.to_owned(),
            key: key.to_owned(),
            cafile: None,
            require_certificate: false,
        };
        let err = server_config(&with(&junk, &good.files.key))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with(&junk.display().to_string()), "{err}");
        let err = server_config(&with(&good.files.cert, &junk))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with(&junk.display().to_string()), "{err}");
        let err = server_config(&with(&good.files.cert, &other.files.key))
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not go with the key"), "{err}");
    }
}
