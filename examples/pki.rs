//! A throw-away PKI for the scripts that run a local mosquitto with mutual
//! TLS (`make demo`, `make bench`, `make test-initd`, through
//! scripts/pki.sh); the tests make theirs with the same code
//! (tests/common/pki.rs).
//!
//! ```text
//! cargo run --example pki -- DIR [NAME[=CN]]...
//! ```
//!
//! writes, in DIR (made, mode 0700, if missing), ECDSA P-256 keys throughout:
//!
//! - `ca.pem`, `ca.key`: the CA;
//! - `server.pem`, `server.key`: the broker's, CN localhost, serverAuth,
//!   subjectAltName DNS:localhost and IP 127.0.0.1;
//! - `NAME.pem`, `NAME.key`: one client (device) certificate per NAME, CN
//!   CN (default NAME), clientAuth.
//!
//! Keys 0600, certificates 0644. Silent on success; on failure one line
//! saying what failed, exit 1 (2 for bad arguments).

#![forbid(unsafe_code)]

use std::path::Path;

// The same file as the tests' generator; they use the ECDSA keys.
#[allow(dead_code)]
#[path = "../tests/common/pki.rs"]
mod pki;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = || -> ! {
        eprintln!("usage: pki DIR [NAME[=CN]]...");
        std::process::exit(2);
    };
    let Some((dir, clients)) = args.split_first() else {
        usage();
    };
    if dir.is_empty() || dir.starts_with('-') {
        usage();
    }
    let clients: Vec<(&str, &str)> = clients
        .iter()
        .map(|a| a.split_once('=').unwrap_or((a.as_str(), a.as_str())))
        .collect();
    for (name, cn) in &clients {
        if !pki::valid_client_name(name) || cn.is_empty() {
            eprintln!(
                "pki: bad client {name:?} with CN {cn:?} (a name of letters, digits, . _ -, not ca or server; a CN not empty)"
            );
            std::process::exit(2);
        }
    }
    if let Err(e) = pki::write_dir(Path::new(dir), &clients) {
        eprintln!("pki: {e}");
        std::process::exit(1);
    }
}
