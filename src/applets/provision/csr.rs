//! The device's new key and its certificate signing request, made here so
//! the private key never leaves the device.
//!
//! An ECDSA P-256 key from *ring* (already linked for TLS: its ECDSA signing
//! is what rustls uses for a client key), written as PKCS#8 PEM
//! (`BEGIN PRIVATE KEY`, which the daemon's key loading takes), and a
//! PKCS#10 request (RFC 2986) built with the few DER types it needs. The
//! whole request is one fixed shape:
//!
//! ```text
//! CertificationRequest ::= SEQUENCE {
//!   certificationRequestInfo SEQUENCE {
//!     version       INTEGER 0,
//!     subject       SEQUENCE { SET { SEQUENCE { OID commonName, UTF8String CN } } },
//!     subjectPKInfo SEQUENCE { SEQUENCE { OID id-ecPublicKey, OID prime256v1 },
//!                              BIT STRING uncompressed point },
//!     attributes    [0] { } },
//!   signatureAlgorithm SEQUENCE { OID ecdsa-with-SHA256 },
//!   signature          BIT STRING ECDSA-Sig-Value }
//! ```
//!
//! Base64 and PEM are written here too (about twenty lines): no crate in
//! the binary's tree encodes base64, and one would cost more than this.

use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair};

/// commonName, 2.5.4.3 (the OIDs' content bytes, DER-encoded once).
const OID_COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];
/// id-ecPublicKey, 1.2.840.10045.2.1.
const OID_EC_PUBLIC_KEY: &[u8] = &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x02, 0x01];
/// prime256v1 (secp256r1), 1.2.840.10045.3.1.7.
const OID_PRIME256V1: &[u8] = &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07];
/// ecdsa-with-SHA256, 1.2.840.10045.4.3.2.
const OID_ECDSA_SHA256: &[u8] = &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x04, 0x03, 0x02];

/// X.520's upper bound on a common name, in characters.
pub const MAX_COMMON_NAME: usize = 64;

/// A new key pair and the request for a certificate of it.
pub struct Request {
    /// The private key, PKCS#8 PEM.
    pub key_pem: String,
    /// The request, PEM (`BEGIN CERTIFICATE REQUEST`).
    pub csr_pem: String,
    /// The request, DER (what the PEM holds), for the tests to read back.
    #[cfg(test)]
    pub csr_der: Vec<u8>,
}

/// Makes a new P-256 key and a request signed with it whose subject is
/// `CN=common_name` (cut to [`MAX_COMMON_NAME`] characters: the name is
/// only informative, the thing's name comes from the provisioning
/// template).
///
/// # Returns
/// The key and request, or a sentence if the system has no randomness.
pub fn generate(common_name: &str) -> Result<Request, String> {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng)
        .map_err(|_| "cannot make a key: no random numbers from the system".to_owned())?;
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng)
        .map_err(|_| "cannot use the key just made".to_owned())?;
    let cn: String = common_name.chars().take(MAX_COMMON_NAME).collect();
    let info = request_info(&cn, pair.public_key().as_ref());
    let signature = pair
        .sign(&rng, &info)
        .map_err(|_| "cannot sign the certificate request".to_owned())?;
    let csr_der = certification_request(&info, signature.as_ref());
    Ok(Request {
        key_pem: pem("PRIVATE KEY", pkcs8.as_ref()),
        csr_pem: pem("CERTIFICATE REQUEST", &csr_der),
        #[cfg(test)]
        csr_der,
    })
}

/// CertificationRequestInfo: what is signed.
fn request_info(cn: &str, public_point: &[u8]) -> Vec<u8> {
    let subject = sequence(&[&set(&[&sequence(&[
        &oid(OID_COMMON_NAME),
        &tlv(0x0C, cn.as_bytes()),
    ])])]);
    let key_info = sequence(&[
        &sequence(&[&oid(OID_EC_PUBLIC_KEY), &oid(OID_PRIME256V1)]),
        &bit_string(public_point),
    ]);
    // No attributes: [0] IMPLICIT SET OF Attribute, empty.
    let attributes = tlv(0xA0, &[]);
    sequence(&[&integer_zero(), &subject, &key_info, &attributes])
}

fn certification_request(info: &[u8], signature: &[u8]) -> Vec<u8> {
    sequence(&[
        info,
        &sequence(&[&oid(OID_ECDSA_SHA256)]),
        &bit_string(signature),
    ])
}

// --- DER: tag, length, contents -------------------------------------------

fn tlv(tag: u8, contents: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(contents.len() + 4);
    out.push(tag);
    let len = contents.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(contents);
    out
}

fn sequence(items: &[&[u8]]) -> Vec<u8> {
    tlv(0x30, &items.concat())
}

fn set(items: &[&[u8]]) -> Vec<u8> {
    tlv(0x31, &items.concat())
}

fn oid(encoded: &[u8]) -> Vec<u8> {
    tlv(0x06, encoded)
}

fn integer_zero() -> Vec<u8> {
    tlv(0x02, &[0])
}

/// A BIT STRING of whole bytes (no unused bits).
fn bit_string(bytes: &[u8]) -> Vec<u8> {
    tlv(0x03, &[&[0u8][..], bytes].concat())
}

// --- base64 and PEM ---------------------------------------------------------

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// RFC 4648 base64, standard alphabet, with padding.
pub fn base64(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(BASE64[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A PEM block (RFC 7468): base64 in lines of 64 characters.
pub fn pem(label: &str, der: &[u8]) -> String {
    let text = base64(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    // Base64 is ASCII, so every 64-byte chunk is whole characters.
    for line in text.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::{ECDSA_P256_SHA256_ASN1, UnparsedPublicKey};

    #[test]
    fn base64_known_vectors() {
        // RFC 4648, section 10.
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), encoded, "{plain:?}");
        }
        // The two last characters of the alphabet, and the first four.
        assert_eq!(base64(&[0xFB, 0xFF, 0xBF]), "+/+/");
        assert_eq!(base64(&[0x00, 0x10, 0x83]), "ABCD");
    }

    #[test]
    fn pem_lines_are_64_characters() {
        let der = [0x5Au8; 90];
        let text = pem("X", &der);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "-----BEGIN X-----");
        assert_eq!(lines[1].len(), 64);
        assert_eq!(lines[2].len(), 120 - 64);
        assert_eq!(lines[3], "-----END X-----");
        assert_eq!(format!("{}{}", lines[1], lines[2]), base64(&der));
    }

    #[test]
    fn der_lengths_short_and_long() {
        assert_eq!(tlv(0x04, &[]), [0x04, 0x00]);
        assert_eq!(tlv(0x04, &[7; 127])[..2], [0x04, 0x7F]);
        assert_eq!(tlv(0x04, &[7; 128])[..3], [0x04, 0x81, 0x80]);
        assert_eq!(tlv(0x04, &[7; 300])[..4], [0x04, 0x82, 0x01, 0x2C]);
        assert_eq!(oid(OID_COMMON_NAME), [0x06, 0x03, 0x55, 0x04, 0x03]);
    }

    /// A minimal DER reader for the test: (tag, contents, rest).
    fn read(der: &[u8]) -> (u8, &[u8], &[u8]) {
        let tag = der[0];
        let (len, at) = match der[1] {
            n if n < 0x80 => (usize::from(n), 2),
            0x81 => (usize::from(der[2]), 3),
            0x82 => (usize::from(der[2]) << 8 | usize::from(der[3]), 4),
            n => panic!("length form {n:#x}"),
        };
        (tag, &der[at..at + len], &der[at + len..])
    }

    /// The request parsed back: (the signed bytes, public point, CN,
    /// signature), checking every fixed part on the way.
    fn parse(csr: &[u8]) -> (Vec<u8>, Vec<u8>, String, Vec<u8>) {
        let (tag, body, rest) = read(csr);
        assert_eq!((tag, rest.len()), (0x30, 0));
        // The signed part, with its header, as it stands in the request.
        let (tag, info, after_info) = read(body);
        assert_eq!(tag, 0x30);
        let signed = body[..body.len() - after_info.len()].to_vec();
        let (tag, algorithm, after_alg) = read(after_info);
        assert_eq!(tag, 0x30);
        assert_eq!(algorithm, oid(OID_ECDSA_SHA256));
        let (tag, signature, rest) = read(after_alg);
        assert_eq!((tag, signature[0], rest.len()), (0x03, 0, 0));

        let (tag, version, rest) = read(info);
        assert_eq!((tag, version), (0x02, &[0u8][..]));
        let (tag, subject, rest) = read(rest);
        assert_eq!(tag, 0x30);
        let (tag, rdn, _) = read(subject);
        assert_eq!(tag, 0x31);
        let (tag, attribute, _) = read(rdn);
        assert_eq!(tag, 0x30);
        let (tag, name_oid, value) = read(attribute);
        assert_eq!((tag, name_oid), (0x06, OID_COMMON_NAME));
        let (tag, cn, _) = read(value);
        assert_eq!(tag, 0x0C);
        let (tag, key_info, rest) = read(rest);
        assert_eq!(tag, 0x30);
        let (tag, algorithm, point) = read(key_info);
        assert_eq!(tag, 0x30);
        assert_eq!(
            algorithm,
            [oid(OID_EC_PUBLIC_KEY), oid(OID_PRIME256V1)].concat()
        );
        let (tag, point, _) = read(point);
        assert_eq!((tag, point[0], point.len()), (0x03, 0, 66));
        assert_eq!(rest, [0xA0, 0x00]);
        (
            signed,
            point[1..].to_vec(),
            String::from_utf8(cn.to_vec()).unwrap(),
            signature[1..].to_vec(),
        )
    }

    #[test]
    fn the_request_is_signed_by_its_own_key() {
        let request = generate("pump-7").unwrap();
        let (signed, point, cn, signature) = parse(&request.csr_der);
        assert_eq!(cn, "pump-7");
        assert_eq!(point.len(), 65);
        assert_eq!(point[0], 0x04, "uncompressed point");
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, &point)
            .verify(&signed, &signature)
            .expect("the signature verifies");
        // A changed byte does not.
        let mut forged = signed.clone();
        let last = forged.len() - 3;
        forged[last] ^= 1;
        assert!(
            UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, &point)
                .verify(&forged, &signature)
                .is_err()
        );
        assert!(
            request
                .csr_pem
                .starts_with("-----BEGIN CERTIFICATE REQUEST-----\n")
        );
        assert!(request.csr_pem.contains(&base64(&request.csr_der)[..64]));
    }

    #[test]
    fn the_key_is_pkcs8_the_daemon_loads_and_matches_the_request() {
        let request = generate("x").unwrap();
        assert!(request.key_pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        // What the daemon does with a key file (tls.rs: rustls-pemfile, then
        // the provider's key loading).
        let item = rustls_pemfile::read_one(&mut request.key_pem.as_bytes())
            .unwrap()
            .unwrap();
        let rustls_pemfile::Item::Pkcs8Key(der) = item else {
            panic!("not PKCS#8: {item:?}")
        };
        let key = rustls::crypto::ring::sign::any_supported_type(&der.into()).unwrap();
        assert_eq!(key.algorithm(), rustls::SignatureAlgorithm::ECDSA);
        // Its public key is the request's.
        let (_, point, _, _) = parse(&request.csr_der);
        let spki = key.public_key().expect("ECDSA keys know their public key");
        assert!(spki.as_ref().ends_with(&point), "same public key");
    }

    #[test]
    fn long_names_are_cut_to_the_x520_bound() {
        let long = "n".repeat(128);
        let (_, _, cn, _) = parse(&generate(&long).unwrap().csr_der);
        assert_eq!(cn.len(), MAX_COMMON_NAME);
        let wide = "é".repeat(100);
        let (_, _, cn, _) = parse(&generate(&wide).unwrap().csr_der);
        assert_eq!(cn.chars().count(), MAX_COMMON_NAME);
    }

    /// openssl, when installed, agrees the request is well formed and its
    /// signature good. The ring check above is the assertion that always
    /// runs; this one is skipped (and says so) without openssl.
    #[test]
    fn openssl_verifies_the_request_when_present() {
        use std::io::Write;
        use std::process::{Command, Stdio};
        let Ok(mut child) = Command::new("openssl")
            .args(["req", "-verify", "-noout", "-subject"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
        else {
            eprintln!("SKIPPED: openssl is not installed; the CSR was checked with ring only");
            return;
        };
        let request = generate("pump-7").unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(request.csr_pem.as_bytes()).unwrap();
        drop(stdin);
        let out = child.wait_with_output().unwrap();
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{said}");
        // "verify OK" (1.1) or "Certificate request self-signature verify OK" (3.x).
        assert!(said.contains("verify OK"), "{said}");
        assert!(said.contains("CN") && said.contains("pump-7"), "{said}");
    }
}
