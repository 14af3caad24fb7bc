//! Throw-away PKI: a CA, server and client certificates signed by it, as PEM
//! files. The one generator of the repository's test certificates: the
//! tests build theirs with it in process (tests/common/mod.rs), and
//! scripts/pki.sh (`make demo`, `make bench`, `make test-initd`) runs
//! examples/pki.rs, which includes this file.
//!
//! Every certificate is X.509 v3 (rustls refuses v1) with the extensions a
//! CA-issued one has: basic constraints, key usage, extended key usage
//! (serverAuth or clientAuth), subject and authority key identifiers. They
//! are valid from an hour ago for two days: throw-away.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// A new key. ECDSA P-256 throughout: quick to make (the tests make a PKI
/// for each test), accepted by AWS IoT Core for device certificates, and
/// *ring* (the TLS library's crypto) can make it, so the tests need no
/// second crypto library.
fn new_key() -> Result<KeyPair, rcgen::Error> {
    KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
}

/// Which side of a TLS connection a leaf certificate is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Server,
    Client,
}

/// A CA: its certificate and key, and what signs with it.
pub struct Ca {
    pub cert_pem: String,
    pub key_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// From an hour ago (a little clock skew) for two days.
fn throw_away_validity(params: &mut CertificateParams) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(2);
}

/// A self-signed CA named `cn`.
pub fn new_ca(cn: &str) -> Result<Ca, rcgen::Error> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, cn);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    throw_away_validity(&mut params);
    let key = new_key()?;
    let cert = params.self_signed(&key)?;
    Ok(Ca {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        issuer: Issuer::new(params, key),
    })
}

/// A certificate for `cn` signed by `ca`, with a new key: (certificate PEM,
/// PKCS#8 key PEM). `sans` are DNS names or IP addresses (subjectAltName).
pub fn new_leaf(
    ca: &Ca,
    cn: &str,
    sans: &[&str],
    role: Role,
) -> Result<(String, String), rcgen::Error> {
    let sans: Vec<String> = sans.iter().map(|s| (*s).to_owned()).collect();
    let mut params = CertificateParams::new(sans)?;
    params.is_ca = IsCa::ExplicitNoCa;
    params.distinguished_name.push(DnType::CommonName, cn);
    params.use_authority_key_identifier_extension = true;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![match role {
        Role::Server => ExtendedKeyUsagePurpose::ServerAuth,
        Role::Client => ExtendedKeyUsagePurpose::ClientAuth,
    }];
    throw_away_validity(&mut params);
    let key = new_key()?;
    let cert = params.signed_by(&key, &ca.issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Writes `contents` to `path` with permissions `mode` (a new file has
/// them from the start: a key is never readable by others, even briefly).
pub fn write_file(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)?;
    f.set_permissions(fs::Permissions::from_mode(mode))?;
    f.write_all(contents)
}

/// A client name is usable as a file name: letters, digits, `.`, `_`, `-`,
/// not starting with a dot, and not `ca` or `server` (whose files are the
/// CA's and the broker's).
pub fn valid_client_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name != "ca"
        && name != "server"
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// The scripts' PKI in `dir` (made, mode 0700, if missing): `ca.pem` and
/// `ca.key`; `server.pem` and `server.key` for the broker (CN localhost,
/// subjectAltName DNS:localhost and IP 127.0.0.1); `NAME.pem` and
/// `NAME.key` for each `(NAME, CN)` of `clients`. Keys 0600, certificates
/// 0644: whoever runs the broker must be who ran this.
pub fn write_dir(dir: &Path, clients: &[(&str, &str)]) -> Result<(), String> {
    if let Some((name, _)) = clients.iter().find(|(n, _)| !valid_client_name(n)) {
        return Err(format!(
            "bad client name {name:?} (letters, digits, . _ -; not ca or server)"
        ));
    }
    if let Some((name, _)) = clients.iter().find(|(_, cn)| cn.is_empty()) {
        return Err(format!("empty CN for {name}"));
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("cannot make {}: {e}", dir.display()))?;
    let write = |name: &str, contents: &str, mode: u32| {
        let path = dir.join(name);
        write_file(&path, contents.as_bytes(), mode)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))
    };
    let sign = |what: &str, e: rcgen::Error| format!("cannot make {what}: {e}");

    let ca = new_ca("iotbox throw-away CA").map_err(|e| sign("the CA", e))?;
    write("ca.key", &ca.key_pem, 0o600)?;
    write("ca.pem", &ca.cert_pem, 0o644)?;
    let mut leaves = vec![("server", "localhost", Role::Server)];
    leaves.extend(clients.iter().map(|&(name, cn)| (name, cn, Role::Client)));
    for (name, cn, role) in leaves {
        let sans: &[&str] = match role {
            Role::Server => &["localhost", "127.0.0.1"],
            Role::Client => &[],
        };
        let (cert, key) = new_leaf(&ca, cn, sans, role).map_err(|e| sign(name, e))?;
        write(&format!("{name}.key"), &key, 0o600)?;
        write(&format!("{name}.pem"), &cert, 0o644)?;
    }
    Ok(())
}
