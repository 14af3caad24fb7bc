//! HTTP CONNECT, for `--proxy_host`/`--proxy_port`: the request, and the
//! parsing of the proxy's reply. Pure; the transport does the I/O.
//!
//! The broker's name goes to the proxy unresolved, so this also works where
//! only the proxy can resolve public names.

/// A reply header longer than this is not a CONNECT reply.
const MAX_REPLY_HEADER: usize = 8 * 1024;

/// The request for a tunnel to `host:port`.
pub fn connect_request(host: &str, port: u16) -> Vec<u8> {
    format!("CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n").into_bytes()
}

/// What the proxy's reply says so far.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    /// More bytes needed.
    Incomplete,
    /// 2xx: the tunnel is up; the header was this long (bytes after it
    /// belong to the tunnel).
    Established { header_len: usize },
    /// Anything else, in words.
    Refused(String),
}

/// Reads the reply header in `buf` (all bytes received so far).
///
/// A header longer than `MAX_REPLY_HEADER` is refused however the bytes
/// arrived: in one read or in pieces, the answer is the same.
pub fn parse_reply(buf: &[u8]) -> Reply {
    let searched = &buf[..buf.len().min(MAX_REPLY_HEADER)];
    let Some(end) = searched.windows(4).position(|w| w == b"\r\n\r\n") else {
        return if buf.len() >= MAX_REPLY_HEADER {
            Reply::Refused("the proxy's reply header is too long".into())
        } else {
            Reply::Incomplete
        };
    };
    let status_line = buf[..end].split(|&b| b == b'\n').next().unwrap_or_default();
    let status_line = String::from_utf8_lossy(status_line).trim_end().to_owned();
    let mut parts = status_line.split_whitespace();
    let version = parts.next().unwrap_or_default();
    let code = parts.next().and_then(|c| c.parse::<u16>().ok());
    match code {
        Some(200..=299) if version.starts_with("HTTP/1.") => Reply::Established {
            header_len: end + 4,
        },
        Some(407) => Reply::Refused(format!(
            "the proxy wants authentication ({status_line}); iotbox does not send any"
        )),
        _ => Reply::Refused(format!("the proxy refused the tunnel: {status_line:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_header_is_refused_however_it_arrives() {
        let mut reply = b"HTTP/1.1 200 OK\r\n".to_vec();
        while reply.len() < MAX_REPLY_HEADER + 100 {
            reply.extend_from_slice(b"X-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        }
        reply.extend_from_slice(b"\r\n");
        // Whole, and every prefix a piecewise read could have seen.
        assert!(matches!(parse_reply(&reply), Reply::Refused(_)));
        for cut in (1..reply.len()).step_by(97) {
            assert!(
                !matches!(parse_reply(&reply[..cut]), Reply::Established { .. }),
                "{cut}"
            );
        }
        // A header just within the limit is fine.
        let mut ok = b"HTTP/1.1 200 OK\r\n".to_vec();
        ok.resize(MAX_REPLY_HEADER - 4, b'a');
        ok.extend_from_slice(b"\r\n\r\n");
        assert_eq!(
            parse_reply(&ok),
            Reply::Established {
                header_len: MAX_REPLY_HEADER
            }
        );
    }

    #[test]
    fn request_names_the_broker() {
        assert_eq!(
            connect_request("a-ats.iot.eu-west-1.amazonaws.com", 443),
            b"CONNECT a-ats.iot.eu-west-1.amazonaws.com:443 HTTP/1.1\r\nHost: a-ats.iot.eu-west-1.amazonaws.com:443\r\n\r\n"
        );
    }

    #[test]
    fn replies() {
        assert_eq!(
            parse_reply(b"HTTP/1.1 200 Connection established\r\n"),
            Reply::Incomplete
        );
        assert_eq!(
            parse_reply(b"HTTP/1.1 200 Connection established\r\nVia: x\r\n\r\n\x16\x03"),
            Reply::Established { header_len: 47 }
        );
        assert_eq!(
            parse_reply(b"HTTP/1.0 200 OK\r\n\r\n"),
            Reply::Established { header_len: 19 }
        );
        assert!(matches!(
            parse_reply(b"HTTP/1.1 403 Forbidden\r\n\r\n"),
            Reply::Refused(why) if why.contains("403")
        ));
        assert!(matches!(
            parse_reply(b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n"),
            Reply::Refused(why) if why.contains("authentication")
        ));
        assert!(matches!(
            parse_reply(b"SSH-2.0-OpenSSH\r\n\r\n"),
            Reply::Refused(_)
        ));
        assert!(matches!(parse_reply(&[b'x'; 9000]), Reply::Refused(_)));
    }
}
