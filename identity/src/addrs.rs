//! The hub's advertised addresses: `HOST:PORT[,HOST:PORT…]`, as given to `flotilla-hub
//! init --advertise` and carried by `hub.conf`, join strings, `admin.conf` and a spoke's
//! `identity.json`. Several addresses name the replicas (or the load balancers) of one
//! hub; clients try them in order.
//!
//! One address is still a valid list, so everything written before lists existed parses
//! unchanged. Parsing is strict and bounded: the text comes from files and join strings
//! that users paste.

use crate::Error;

/// More addresses than this is not a hub's replica set.
pub const MAX_HUB_ADDRESSES: usize = 16;
/// Longest `HOST:PORT` (a DNS name is at most 253 bytes, plus `:65535`).
const MAX_ADDRESS_LEN: usize = 260;

/// Splits and checks a comma-separated address list. Each entry is `HOST:PORT` (an IPv6
/// host in brackets); duplicates and empty entries are refused.
pub fn hub_addresses(list: &str) -> Result<Vec<String>, Error> {
    let bad = |why: String| {
        Error::Address(format!(
            "hub address list {list:?}: {why}; expected HOST:PORT[,HOST:PORT…]"
        ))
    };
    let mut out: Vec<String> = Vec::new();
    for entry in list.split(',') {
        if out.len() == MAX_HUB_ADDRESSES {
            return Err(bad(format!("more than {MAX_HUB_ADDRESSES} addresses")));
        }
        let addr = entry.trim();
        check_address(addr).map_err(|why| bad(format!("{addr:?} {why}")))?;
        if out.iter().any(|a| a == addr) {
            return Err(bad(format!("{addr:?} is listed twice")));
        }
        out.push(addr.to_string());
    }
    Ok(out)
}

/// The host of a checked `HOST:PORT`, without IPv6 brackets (what a certificate SAN
/// names).
pub fn host(addr: &str) -> &str {
    addr.rsplit_once(':').map_or(addr, |(h, _)| {
        h.trim_start_matches('[').trim_end_matches(']')
    })
}

fn check_address(addr: &str) -> Result<(), &'static str> {
    if addr.is_empty() {
        return Err("is empty");
    }
    if addr.len() > MAX_ADDRESS_LEN {
        return Err("is too long");
    }
    let (host, port) = addr.rsplit_once(':').ok_or("has no :PORT")?;
    if port.parse::<u16>().map_or(true, |p| p == 0) {
        return Err("has no valid port (1-65535)");
    }
    let host = match host.strip_prefix('[') {
        Some(v6) => {
            let v6 = v6.strip_suffix(']').ok_or("has an unclosed [")?;
            v6.parse::<std::net::Ipv6Addr>()
                .map_err(|_| "has a bracketed host that is not an IPv6 address")?;
            return Ok(());
        }
        None => host,
    };
    // A DNS name or an IPv4 address: nothing that could end a URI's authority early.
    let ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
    if !ok {
        return Err("has a host that is not a DNS name or an IP address");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_address_or_several_parse_in_order() {
        assert_eq!(
            hub_addresses("127.0.0.1:7443").expect("one"),
            ["127.0.0.1:7443"]
        );
        assert_eq!(
            hub_addresses("hub-a.example.com:443, [::1]:7443,10.0.0.2:7443").expect("three"),
            ["hub-a.example.com:443", "[::1]:7443", "10.0.0.2:7443"]
        );
        assert_eq!(host("[::1]:7443"), "::1");
        assert_eq!(host("hub-a.example.com:443"), "hub-a.example.com");
    }

    #[test]
    fn malformed_lists_are_refused_with_the_entry_named() {
        for (list, why) in [
            ("", "is empty"),
            ("a:1,", "is empty"),
            ("a:1,,b:2", "is empty"),
            ("hub", "has no :PORT"),
            ("hub:0", "valid port"),
            ("hub:http", "valid port"),
            ("a:1,a:1", "listed twice"),
            ("[::1:7443", "unclosed"),
            ("[nope]:7443", "not an IPv6"),
            ("user@hub:7443", "not a DNS name"),
            ("hub/x:7443", "not a DNS name"),
        ] {
            let err = hub_addresses(list).expect_err(list).to_string();
            assert!(err.contains(why), "{list:?}: {err}");
        }
        let many = (1..=17).map(|i| format!("h{i}:1")).collect::<Vec<_>>();
        let err = hub_addresses(&many.join(",")).expect_err("too many");
        assert!(err.to_string().contains("more than 16"), "{err}");
        let long = format!("{}:1", "a".repeat(300));
        assert!(hub_addresses(&long).is_err());
    }
}
