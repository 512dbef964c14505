//! Name service URLs: how configuration says which name service to use.
//!
//! The scheme picks the kind of service, so new kinds (a `dns://` resolver reading
//! records from TXT entries, say) can be added without changing configuration formats.
//! Today only msocket's own server is spoken: `tcp://HOST:PORT`, or plain `HOST:PORT`,
//! optionally followed by `#FINGERPRINT`: the server's key, which the client then insists
//! on (the channel to the server is authenticated either way).

use std::sync::Arc;
use std::time::Duration;

use super::{NameError, NameService, TcpNameClient};
use crate::identity::Fingerprint;

/// The name server `msocketd name` runs by default.
pub const DEFAULT_NAMES_URL: &str = "tcp://127.0.0.1:7450";

/// The name service `url` designates, with `timeout` bounding each request.
///
/// Accepts `tcp://HOST:PORT` and bare `HOST:PORT` (HOST may be a DNS name, an IPv4
/// address or a bracketed IPv6 address), each optionally followed by `#FINGERPRINT` (the
/// server's key, as `msocketd name` prints it). No connection is made here.
pub fn connect_url(url: &str, timeout: Duration) -> Result<Arc<dyn NameService>, NameError> {
    let bad = |reason: &str| NameError::BadUrl { url: url.to_string(), reason: reason.to_string() };
    let authority = match url.split_once("://") {
        Some(("tcp", rest)) => rest,
        Some(("dns", _)) => return Err(bad("the dns:// name service is not supported yet")),
        Some((scheme, _)) => {
            return Err(bad(&format!("unknown scheme {scheme:?} (expected tcp://HOST:PORT)")))
        }
        None => url,
    };
    let (host_port, pin) = match authority.split_once('#') {
        Some((host_port, fingerprint)) => {
            let pin = fingerprint.parse::<Fingerprint>().map_err(|e| bad(&format!("the server's fingerprint: {e}")))?;
            (host_port, Some(pin))
        }
        None => (authority, None),
    };
    check_host_port(host_port).map_err(bad)?;
    Ok(Arc::new(match pin {
        Some(pin) => TcpNameClient::pinned(host_port.to_string(), pin, timeout),
        None => TcpNameClient::new(host_port.to_string(), timeout),
    }))
}

pub(crate) fn check_host_port(authority: &str) -> Result<(), &'static str> {
    if authority.contains(['/', '?', '#', '@']) || authority.chars().any(char::is_whitespace) {
        return Err("expected HOST:PORT with no path, query, user or spaces");
    }
    let (host, port) = authority.rsplit_once(':').ok_or("missing :PORT")?;
    match port.parse::<u16>() {
        Ok(p) if p != 0 => {}
        _ => return Err("the port is not a number from 1 to 65535"),
    }
    if let Some(inner) = host.strip_prefix('[') {
        let ip = inner.strip_suffix(']').ok_or("unclosed '[' in an IPv6 address")?;
        ip.parse::<std::net::Ipv6Addr>().map_err(|_| "invalid IPv6 address")?;
    } else if host.is_empty() {
        return Err("missing host");
    } else if host.contains(':') {
        return Err("IPv6 addresses must be written in brackets, e.g. [::1]:7450");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(1);

    #[test]
    fn tcp_urls_are_accepted() {
        for url in
            [DEFAULT_NAMES_URL, "127.0.0.1:7450", "tcp://names.example:1", "tcp://[::1]:7450"]
        {
            let svc = connect_url(url, T).unwrap_or_else(|e| panic!("{url}: {e}"));
            // The service is the TCP client for the address after the scheme.
            let shown = format!("{svc:?}");
            let authority = url.trim_start_matches("tcp://");
            assert!(shown.contains(authority), "{shown}");
        }
    }

    #[test]
    fn a_url_may_pin_the_servers_key() {
        let fp = crate::identity::Identity::from_seed([3; 32]).public().fingerprint();
        for url in [format!("tcp://127.0.0.1:7450#{fp}"), format!("[::1]:7450#{fp}")] {
            let shown = format!("{:?}", connect_url(&url, T).unwrap_or_else(|e| panic!("{url}: {e}")));
            assert!(shown.contains(&fp), "{shown}");
        }
        match connect_url("tcp://127.0.0.1:7450#abc", T) {
            Err(NameError::BadUrl { reason, .. }) => assert!(reason.contains("fingerprint"), "{reason}"),
            other => panic!("a short fingerprint was accepted: {other:?}"),
        }
    }

    #[test]
    fn other_urls_are_refused_with_a_reason() {
        let cases = [
            ("dns://example.com", "not supported yet"),
            ("http://example.com:80", "unknown scheme"),
            ("tcp://example.com", "missing :PORT"),
            ("example.com:http", "port"),
            ("example.com:0", "port"),
            ("example.com:70000", "port"),
            ("tcp://:7450", "missing host"),
            ("tcp://host:7450/path", "no path"),
            ("::1:7450", "brackets"),
            ("[::1:7450", "unclosed"),
            ("[zz]:7450", "IPv6"),
            ("", "missing :PORT"),
        ];
        for (url, why) in cases {
            match connect_url(url, T) {
                Err(NameError::BadUrl { url: u, reason }) => {
                    assert_eq!(u, url);
                    assert!(reason.contains(why), "{url}: {reason}");
                }
                other => panic!("{url} accepted: {other:?}"),
            }
        }
    }
}
