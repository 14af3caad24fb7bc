//! The rustls client configuration: certificate, key and trust anchors from
//! PEM files (or Amazon's roots built in), ALPN for port 443, and TLS errors
//! turned into sentences that say what to do.

use crate::output::utc_date;
use rustls::client::ClientConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::time_provider::{DefaultTimeProvider, TimeProvider};
use rustls::{AlertDescription, CertificateError, RootCertStore};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Amazon Root CA 1 (RSA) and 3 (ECDSA), the roots of AWS IoT Core's ATS
/// endpoints, from Debian's ca-certificates. Used when no CA file is given
/// and the system has none, so a stock Pi needs no CA file.
const AMAZON_ROOTS: &str = include_str!("amazon_root_ca.pem");

/// Where the how-to told people to put AmazonRootCA1.pem, and the system
/// bundle on Debian and Raspberry Pi OS.
pub const SYSTEM_CA_FILE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// AWS IoT Core requires this ALPN protocol for MQTT on port 443.
pub const AWS_ALPN: &[u8] = b"x-amzn-mqtt-ca";

/// Where the trust anchors come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaSource {
    File(PathBuf),
    BuiltIn,
}

impl CaSource {
    /// `--ca_file` if given, else the system bundle if it exists, else the
    /// built-in Amazon roots.
    pub fn choose(flag: Option<PathBuf>) -> CaSource {
        match flag {
            Some(path) => CaSource::File(path),
            None if Path::new(SYSTEM_CA_FILE).exists() => {
                CaSource::File(PathBuf::from(SYSTEM_CA_FILE))
            }
            None => CaSource::BuiltIn,
        }
    }

    fn describe(&self) -> String {
        match self {
            CaSource::File(p) => p.display().to_string(),
            CaSource::BuiltIn => "the built-in Amazon Root CA 1 and 3".into(),
        }
    }
}

/// The files a TLS configuration is built from; kept to rebuild it on SIGHUP.
#[derive(Debug, Clone)]
pub struct Files {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: CaSource,
    /// Offer ALPN `x-amzn-mqtt-ca` (port 443).
    pub alpn: bool,
}

impl Files {
    /// Reads and checks every file and builds the client configuration.
    ///
    /// # Returns
    /// The configuration, or one sentence naming the file and the problem.
    pub fn load(&self) -> Result<Arc<ClientConfig>, String> {
        self.load_with_clock(Arc::new(DefaultTimeProvider))
    }

    /// [`Files::load`] with the clock certificate checks use (tests pin it).
    fn load_with_clock(&self, clock: Arc<dyn TimeProvider>) -> Result<Arc<ClientConfig>, String> {
        let certs = load_certs(&self.cert)?;
        let key = load_key(&self.key)?;
        let mut roots = RootCertStore::empty();
        let anchors = match &self.ca {
            CaSource::File(path) => load_certs(path)?,
            CaSource::BuiltIn => parse_pem(AMAZON_ROOTS.as_bytes(), "built-in roots")?.certs,
        };
        let (added, _ignored) = roots.add_parsable_certificates(anchors);
        if added == 0 {
            return Err(format!(
                "{}: no usable CA certificate in it",
                self.ca.describe()
            ));
        }
        let provider = Arc::new(super::crypto::provider());
        let mut config = ClientConfig::builder_with_details(provider, clock)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS setup: {e}"))?
            .with_root_certificates(roots)
            .with_client_auth_cert(certs, key)
            .map_err(|e| match e {
                rustls::Error::InconsistentKeys(_) => format!(
                    "{} does not belong to {}: the key and certificate must be the pair AWS issued for this device",
                    self.key.display(),
                    self.cert.display()
                ),
                e if is_v1_certificate(&e) => format!(
                    "{} is an X.509 v1 certificate, which TLS libraries refuse: make it v3 (with openssl: add -extfile with basicConstraints=CA:FALSE when signing)",
                    self.cert.display()
                ),
                e => format!(
                    "cannot use {} with {}: {e}",
                    self.cert.display(),
                    self.key.display()
                ),
            })?;
        if self.alpn {
            config.alpn_protocols = vec![AWS_ALPN.to_vec()];
        }
        Ok(Arc::new(config))
    }

    pub fn ca_description(&self) -> String {
        self.ca.describe()
    }

    /// The device certificate's notAfter (Unix seconds): the first
    /// certificate of the cert file, read again now (call it after a
    /// successful [`Files::load`], at start and on SIGHUP).
    ///
    /// # Returns
    /// `None` if the file cannot be read or its certificate parsed; the
    /// expiry is then unknown, which is no reason to refuse it (rustls is
    /// the judge of the certificate).
    pub fn leaf_not_after(&self) -> Option<u64> {
        let bytes = std::fs::read(&self.cert).ok()?;
        let pem = parse_pem(&bytes, "").ok()?;
        super::validity::not_after(pem.certs.first()?)
    }
}

/// What a PEM file held.
struct Pem {
    certs: Vec<CertificateDer<'static>>,
    key: Option<PrivateKeyDer<'static>>,
}

/// The one place PEM is parsed (rustls-pemfile, per the design card; it is
/// flagged unmaintained as RUSTSEC-2025-0134, so keep it swappable).
fn parse_pem(bytes: &[u8], what: &str) -> Result<Pem, String> {
    let mut pem = Pem {
        certs: Vec::new(),
        key: None,
    };
    for item in rustls_pemfile::read_all(&mut &bytes[..]) {
        match item.map_err(|e| format!("{what}: not valid PEM: {e}"))? {
            rustls_pemfile::Item::X509Certificate(cert) => pem.certs.push(cert),
            rustls_pemfile::Item::Pkcs1Key(k) if pem.key.is_none() => pem.key = Some(k.into()),
            rustls_pemfile::Item::Pkcs8Key(k) if pem.key.is_none() => pem.key = Some(k.into()),
            rustls_pemfile::Item::Sec1Key(k) if pem.key.is_none() => pem.key = Some(k.into()),
            _ => {}
        }
    }
    Ok(pem)
}

fn read_file(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = parse_pem(&read_file(path)?, &path.display().to_string())?;
    if pem.certs.is_empty() {
        return Err(format!(
            "{}: no certificate in it (expected a PEM block 'BEGIN CERTIFICATE')",
            path.display()
        ));
    }
    Ok(pem.certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    parse_pem(&read_file(path)?, &path.display().to_string())?
        .key
        .ok_or_else(|| {
            format!(
                "{}: no private key in it (expected 'BEGIN PRIVATE KEY', 'BEGIN RSA PRIVATE KEY' or 'BEGIN EC PRIVATE KEY')",
                path.display()
            )
        })
}

/// webpki refuses X.509 v1 certificates (openssl makes them unless told
/// otherwise); AWS issues v3.
fn is_v1_certificate(e: &rustls::Error) -> bool {
    match e {
        rustls::Error::InvalidCertificate(CertificateError::Other(other)) => matches!(
            other.0.downcast_ref::<webpki::Error>(),
            Some(webpki::Error::UnsupportedCertVersion)
        ),
        _ => false,
    }
}

/// Alerts a broker sends when it does not accept our client certificate.
fn is_client_cert_alert(alert: &AlertDescription) -> bool {
    matches!(
        alert,
        AlertDescription::BadCertificate
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::CertificateRevoked
            | AlertDescription::CertificateExpired
            | AlertDescription::CertificateUnknown
            | AlertDescription::UnknownCA
            | AlertDescription::AccessDenied
            | AlertDescription::CertificateRequired
    )
}

/// Whether a TLS error is about certificates (ours refused, or the broker's
/// not trusted): retrying will not help, so at the first connection it is
/// fatal.
pub fn is_certificate_error(e: &rustls::Error) -> bool {
    match e {
        rustls::Error::InvalidCertificate(_) => true,
        rustls::Error::AlertReceived(alert) => is_client_cert_alert(alert),
        _ => false,
    }
}

/// Whether a TLS error comes from an unset system clock: then it is not
/// fatal, since NTP may set the clock any moment after boot.
pub fn is_clock_error(e: &rustls::Error, now: SystemTime) -> bool {
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    secs < PLAUSIBLE_EPOCH_SECS
        && matches!(
            e,
            rustls::Error::InvalidCertificate(
                CertificateError::NotValidYet
                    | CertificateError::NotValidYetContext { .. }
                    | CertificateError::Expired
                    | CertificateError::ExpiredContext { .. }
            )
        )
}

/// Before 2020 the clock is surely unset (a Pi without RTC boots in 1970).
const PLAUSIBLE_EPOCH_SECS: u64 = 1_577_836_800;

/// A TLS error as a sentence that says what to do.
pub fn explain(
    e: &rustls::Error,
    endpoint: &str,
    files: Option<&Files>,
    now: SystemTime,
) -> String {
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let ca = files.map_or_else(|| "the CA file".into(), Files::ca_description);
    match e {
        rustls::Error::InvalidCertificate(cert) => match cert {
            CertificateError::NotValidYet
            | CertificateError::NotValidYetContext { .. }
            | CertificateError::Expired
            | CertificateError::ExpiredContext { .. }
                if secs < PLAUSIBLE_EPOCH_SECS =>
            {
                format!(
                    "system clock is {}; TLS cannot check certificates until the time is set (date -s \"YYYY-MM-DD hh:mm:ss\", or NTP)",
                    utc_date(secs)
                )
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => format!(
                "the broker's certificate is not valid yet at {} (system time); check the clock",
                utc_date(secs)
            ),
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => format!(
                "the broker's certificate has expired at {} (system time); check the clock",
                utc_date(secs)
            ),
            CertificateError::UnknownIssuer => format!(
                "the broker's certificate is not signed by a CA in {ca}: for AWS IoT use --ca_file AmazonRootCA1.pem, otherwise your broker's CA"
            ),
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                format!("the broker's certificate is not valid for {endpoint}: check --endpoint")
            }
            other => format!("the broker's certificate was rejected: {other:?}"),
        },
        rustls::Error::AlertReceived(alert) if is_client_cert_alert(alert) => format!(
            "the broker refused the client certificate (TLS alert: {alert:?}): check that --cert and --key are this device's and that the certificate is registered and active (AWS IoT console: Security > Certificates)"
        ),
        other => format!("TLS error: {other}"),
    }
}

/// The tests' and scripts' throw-away PKI generator, shared with them.
#[cfg(test)]
#[path = "../../../tests/common/pki.rs"]
#[allow(dead_code)]
mod throw_away_pki;

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_1970_clock_is_named() {
        let e = rustls::Error::InvalidCertificate(CertificateError::NotValidYet);
        let boot = UNIX_EPOCH + Duration::from_secs(42);
        let text = explain(&e, "x", None, boot);
        assert!(text.contains("system clock is 1970-01-01"), "{text}");
        assert!(text.contains("date -s"), "{text}");
        let later = UNIX_EPOCH + Duration::from_secs(1_795_857_916);
        assert!(!explain(&e, "x", None, later).contains("1970"));
        assert!(is_clock_error(&e, boot));
        assert!(!is_clock_error(&e, later));
    }

    #[test]
    fn refused_client_certificate_is_named() {
        let e = rustls::Error::AlertReceived(AlertDescription::UnknownCA);
        assert!(is_certificate_error(&e));
        assert!(
            explain(&e, "x", None, SystemTime::now()).contains("refused the client certificate")
        );
        assert!(!is_certificate_error(&rustls::Error::HandshakeNotComplete));
    }

    #[test]
    fn built_in_roots_parse() {
        let pem = parse_pem(AMAZON_ROOTS.as_bytes(), "built-in").unwrap();
        assert_eq!(pem.certs.len(), 2);
        let mut roots = RootCertStore::empty();
        assert_eq!(roots.add_parsable_certificates(pem.certs), (2, 0));
    }

    use super::throw_away_pki::{Role, new_ca, new_leaf};

    /// A throw-away PKI in a temp dir: CA, server (localhost), and a client
    /// certificate with its key, plus a key that belongs to nothing.
    struct Pki {
        dir: tempfile::TempDir,
        server: (String, String),
    }

    impl Pki {
        fn new(name: &str) -> Pki {
            let dir = tempfile::Builder::new()
                .prefix(&format!("iotbox-tls-{name}-"))
                .tempdir()
                .unwrap();
            let ca = new_ca("iotbox tls test CA").unwrap();
            std::fs::write(dir.path().join("ca.pem"), &ca.cert_pem).unwrap();
            let server = new_leaf(&ca, "localhost", &["localhost"], Role::Server).unwrap();
            let (cert, key) = new_leaf(&ca, "device", &[], Role::Client).unwrap();
            std::fs::write(dir.path().join("client.pem"), cert).unwrap();
            std::fs::write(dir.path().join("client.key"), key).unwrap();
            let (_, other_key) = new_leaf(&ca, "other", &[], Role::Client).unwrap();
            std::fs::write(dir.path().join("other.key"), other_key).unwrap();
            Pki { dir, server }
        }

        fn files(&self, key: &str) -> Files {
            Files {
                cert: self.dir.path().join("client.pem"),
                key: self.dir.path().join(key),
                ca: CaSource::File(self.dir.path().join("ca.pem")),
                alpn: false,
            }
        }

        /// A handshake in memory against a server with `self.server`; the
        /// client's error, if any.
        fn handshake(&self, client: Arc<ClientConfig>, name: &str) -> Option<rustls::Error> {
            let certs = parse_pem(self.server.0.as_bytes(), "server").unwrap().certs;
            let key = parse_pem(self.server.1.as_bytes(), "server")
                .unwrap()
                .key
                .unwrap();
            let server = rustls::ServerConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
            let mut server = rustls::ServerConnection::new(Arc::new(server)).unwrap();
            let name = rustls::pki_types::ServerName::try_from(name.to_owned()).unwrap();
            let mut client = rustls::ClientConnection::new(client, name).unwrap();
            for _ in 0..10 {
                let mut buf = Vec::new();
                client.write_tls(&mut buf).unwrap();
                server.read_tls(&mut &buf[..]).unwrap();
                let _ = server.process_new_packets();
                buf.clear();
                server.write_tls(&mut buf).unwrap();
                client.read_tls(&mut &buf[..]).unwrap();
                if let Err(e) = client.process_new_packets() {
                    return Some(e);
                }
                if !client.is_handshaking() {
                    return None;
                }
            }
            panic!("handshake did not finish");
        }
    }

    #[derive(Debug)]
    struct Clock(u64);

    impl TimeProvider for Clock {
        fn current_time(&self) -> Option<rustls::pki_types::UnixTime> {
            Some(rustls::pki_types::UnixTime::since_unix_epoch(
                Duration::from_secs(self.0),
            ))
        }
    }

    #[test]
    fn a_pi_booted_in_1970_is_told_to_set_its_clock() {
        let pki = Pki::new("clock");
        let files = pki.files("client.key");
        assert_eq!(pki.handshake(files.load().unwrap(), "localhost"), None);
        let booted = files.load_with_clock(Arc::new(Clock(42))).unwrap();
        let err = pki.handshake(booted, "localhost").expect("refused in 1970");
        let at = UNIX_EPOCH + Duration::from_secs(42);
        assert!(is_certificate_error(&err));
        assert!(is_clock_error(&err, at), "{err:?}");
        let text = explain(&err, "localhost", Some(&files), at);
        assert!(
            text.starts_with("system clock is 1970-01-01 00:00:42 UTC"),
            "{text}"
        );
    }

    #[test]
    fn a_wrong_endpoint_name_is_named() {
        let pki = Pki::new("name");
        let files = pki.files("client.key");
        let err = pki
            .handshake(files.load().unwrap(), "elsewhere.example")
            .unwrap();
        let text = explain(&err, "elsewhere.example", Some(&files), SystemTime::now());
        assert!(text.contains("not valid for elsewhere.example"), "{text}");
    }

    #[test]
    fn the_device_certificate_expiry_is_read() {
        let pki = Pki::new("expiry");
        let files = pki.files("client.key");
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let not_after = files.leaf_not_after().expect("notAfter");
        // throw_away_pki: valid for two days (DER times have whole seconds).
        assert!((now + 2 * 86_400 - 2..=now + 2 * 86_400 + 1).contains(&not_after));
        let missing = Files {
            cert: "/nonexistent/cert.pem".into(),
            ..files.clone()
        };
        assert_eq!(missing.leaf_not_after(), None);
        let not_pem = Files {
            cert: pki.dir.path().join("client.key"),
            ..files
        };
        assert_eq!(not_pem.leaf_not_after(), None);
    }

    #[test]
    fn amazon_roots_expiry_is_read() {
        // DER from another encoder than rcgen: Amazon Root CA 1 (RSA) and 3.
        let pem = parse_pem(AMAZON_ROOTS.as_bytes(), "built-in").unwrap();
        let dates: Vec<_> = pem
            .certs
            .iter()
            .map(|c| super::super::validity::not_after(c))
            .collect();
        // 2038-01-17 00:00:00 and 2040-05-26 00:00:00 UTC (openssl x509 -enddate).
        assert_eq!(dates, [Some(2_147_299_200), Some(2_221_603_200)]);
    }

    #[test]
    fn a_key_of_another_certificate_is_refused_at_load() {
        let pki = Pki::new("key");
        let err = pki.files("other.key").load().unwrap_err();
        assert!(err.contains("does not belong to"), "{err}");
    }

    #[test]
    fn missing_and_wrong_files_say_which() {
        let files = Files {
            cert: "/nonexistent/cert.pem".into(),
            key: "/nonexistent/key".into(),
            ca: CaSource::BuiltIn,
            alpn: true,
        };
        let err = files.load().unwrap_err();
        assert!(err.contains("/nonexistent/cert.pem"), "{err}");
        let err = parse_pem(b"hello", "x").map(|p| p.certs.len());
        assert_eq!(err, Ok(0));
    }
}
