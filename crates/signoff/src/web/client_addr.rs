//! The client's address: the peer, or what trusted proxies say in
//! `X-Forwarded-For` ([`ClientAddr`]).

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header::{HeaderMap, HeaderName};
use axum::http::request::Parts;
use axum::http::Extensions;
use axum::response::Response;

use super::GateRef;

/// Made once (a name given as a `&str` is parsed at every lookup).
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// The client's address ([`client_ip`], with the gate's trusted proxies).
/// The peer's address comes from axum's `ConnectInfo<SocketAddr>`
/// (`into_make_service_with_connect_info`); without it the peer is
/// unknown, so nothing a client says about its address is believed, and
/// the address is the unspecified `0.0.0.0` (never loopback, which some
/// code trusts).
pub struct ClientAddr(pub IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Response> {
        let gate = GateRef::of(parts)?;
        let Some(ConnectInfo(peer)) = parts.extensions.get::<ConnectInfo<SocketAddr>>() else {
            return Ok(ClientAddr(IpAddr::from([0, 0, 0, 0])));
        };
        Ok(ClientAddr(client_ip(
            peer.ip(),
            &parts.headers,
            gate.trusted_proxies(),
        )))
    }
}

/// The connection's peer (loopback when the server gave no address).
pub fn peer_ip(extensions: &Extensions) -> IpAddr {
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::from([127, 0, 0, 1]), |c| c.0.ip())
}

/// Whether `ip` (IPv4-mapped addresses as IPv4) is one of the proxies.
pub fn is_trusted(ip: &IpAddr, trusted: &[ipnet::IpNet]) -> bool {
    let ip = ip.to_canonical();
    trusted.iter().any(|n| n.contains(&ip))
}

/// The client's address: the peer, or, when the peer is a trusted proxy,
/// the rightmost `X-Forwarded-For` entry that is not a trusted proxy.
/// Walking from the right (the entries our proxies appended) means a client
/// cannot choose its own address; an entry that is not an address ends the
/// walk at the last trusted hop.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[ipnet::IpNet]) -> IpAddr {
    let mut client = peer.to_canonical();
    if !is_trusted(&client, trusted) {
        return client;
    }
    let entries: Vec<&str> = headers
        .get_all(X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    for entry in entries.iter().rev() {
        match forwarded_address(entry) {
            Some(ip) => {
                client = ip.to_canonical();
                if !is_trusted(&client, trusted) {
                    break;
                }
            }
            None => break,
        }
    }
    client
}

/// The address in one `X-Forwarded-For` entry: `203.0.113.5`, `2001:db8::1`,
/// and, as some proxies (Azure Application Gateway, IIS) write them, with a
/// port (`203.0.113.5:40001`, `[2001:db8::1]:443`) or brackets alone.
fn forwarded_address(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(socket) = entry.parse::<SocketAddr>() {
        return Some(socket.ip());
    }
    entry
        .strip_prefix('[')
        .and_then(|e| e.strip_suffix(']'))
        .and_then(|e| e.parse::<std::net::Ipv6Addr>().ok())
        .map(IpAddr::V6)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::header::HeaderValue;

    fn xff(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn forwarded_for_is_walked_from_the_right() {
        let proxies: Vec<ipnet::IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        let outsider: IpAddr = "192.0.2.50".parse().unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        // Untrusted peers are the client, whatever they claim.
        assert_eq!(
            client_ip(outsider, &xff(&["203.0.113.9"]), &proxies),
            outsider
        );
        // A trusted proxy's last appended entry wins over client-sent ones.
        assert_eq!(
            client_ip(proxy, &xff(&["6.6.6.6, 203.0.113.9"]), &proxies),
            ip("203.0.113.9")
        );
        assert_eq!(
            client_ip(proxy, &xff(&["6.6.6.6", "203.0.113.9, 10.0.0.2"]), &proxies),
            ip("203.0.113.9")
        );
        // Garbage cannot cut the list short in the client's favour.
        assert_eq!(
            client_ip(proxy, &xff(&["6.6.6.6, x, 203.0.113.9"]), &proxies),
            ip("203.0.113.9")
        );
        assert_eq!(client_ip(proxy, &xff(&["6.6.6.6, x"]), &proxies), proxy);
        assert_eq!(client_ip(proxy, &xff(&[]), &proxies), proxy);
        // Entries with a port (Azure Application Gateway, IIS) are the
        // address, not garbage that ends the walk at the proxy.
        for entry in [
            "203.0.113.5:40001",
            "[2001:db8::1]:443",
            "[2001:db8::1]",
            " 203.0.113.5 ",
        ] {
            let expected = if entry.contains("2001") {
                ip("2001:db8::1")
            } else {
                ip("203.0.113.5")
            };
            assert_eq!(
                client_ip(proxy, &xff(&[&format!("6.6.6.6, {entry}")]), &proxies),
                expected,
                "{entry}"
            );
        }
        // A trusted proxy with a port is still walked past.
        assert_eq!(
            client_ip(proxy, &xff(&["203.0.113.5:1, 10.0.0.2:8080"]), &proxies),
            ip("203.0.113.5")
        );
        for garbage in [
            "203.0.113.5:x",
            "[2001:db8::1",
            "2001:db8::1]:443",
            "unknown",
        ] {
            assert_eq!(
                client_ip(proxy, &xff(&[garbage]), &proxies),
                proxy,
                "{garbage}"
            );
        }
        // IPv4-mapped peers match IPv4 ranges.
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(
            client_ip(mapped, &xff(&["203.0.113.9"]), &proxies),
            ip("203.0.113.9")
        );
    }
}
