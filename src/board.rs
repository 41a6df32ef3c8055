//! The board the relay runs on, as its own page and its owner see it: the
//! addresses an invite link can use, the `.local` name, the resident memory
//! and the README's worst-case memory bound.

use std::fmt::Write;
use std::net::IpAddr;

use crate::config::Config;

/// Interface name prefixes of container and VM bridges: their addresses are
/// not reachable from the LAN.
const VIRTUAL_PREFIXES: [&str; 5] = ["docker", "veth", "virbr", "br-", "lxc"];

/// Whether `ip` could be used by another machine on the LAN to reach us.
fn lan_usable(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !(v4.is_loopback() || v4.is_link_local() || v4.is_unspecified()),
        IpAddr::V6(v6) => {
            // fe80::/10 needs a zone id, which a URL cannot carry portably.
            !(v6.is_loopback() || v6.is_unspecified() || (v6.segments()[0] & 0xffc0) == 0xfe80)
        }
    }
}

/// The board's LAN addresses, IPv4 first; only `host` when the relay listens on
/// one specific address.
pub fn lan_addresses(host: &str) -> Vec<IpAddr> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        if !ip.is_unspecified() {
            return if lan_usable(ip) { vec![ip] } else { Vec::new() };
        }
    }
    let mut out: Vec<IpAddr> = Vec::new();
    if let Ok(addrs) = nix::ifaddrs::getifaddrs() {
        for ifa in addrs {
            let up = ifa.flags.contains(nix::net::if_::InterfaceFlags::IFF_UP);
            if !up
                || VIRTUAL_PREFIXES
                    .iter()
                    .any(|p| ifa.interface_name.starts_with(p))
            {
                continue;
            }
            let Some(addr) = ifa.address else { continue };
            let ip = if let Some(a) = addr.as_sockaddr_in() {
                IpAddr::V4(a.ip())
            } else if let Some(a) = addr.as_sockaddr_in6() {
                IpAddr::V6(a.ip())
            } else {
                continue;
            };
            if lan_usable(ip) && !out.contains(&ip) {
                out.push(ip);
            }
        }
    }
    out.sort_by_key(|ip| ip.is_ipv6());
    out
}

/// `<hostname>.local` (the name Avahi announces), if the host has a plain name.
pub fn mdns_name() -> Option<String> {
    let name = nix::unistd::gethostname().ok()?.into_string().ok()?;
    let name = name.split('.').next().unwrap_or("");
    let plain = !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && name != "localhost";
    plain.then(|| format!("{}.local", name.to_ascii_lowercase()))
}

/// The page's `hub.json`. Addresses and the host name are given only to a
/// client on the board itself (`local`): that is the only case the page needs
/// them, and nobody else needs to learn the LAN layout.
pub fn hub_json(cfg: &Config, local: bool) -> String {
    let mut out = String::with_capacity(160);
    let _ = write!(
        out,
        "{{\"max_message_bytes\":{},\"addresses\":[",
        cfg.max_message_size
    );
    if local {
        for (i, ip) in lan_addresses(&cfg.host).iter().enumerate() {
            let _ = write!(out, "{}\"{ip}\"", if i == 0 { "" } else { "," });
        }
    }
    out.push_str("],\"hostname\":");
    match mdns_name().filter(|_| local) {
        // The name holds only [a-z0-9-]: nothing to escape.
        Some(name) => {
            let _ = write!(out, "\"{name}\"");
        }
        None => out.push_str("null"),
    }
    out.push('}');
    out
}

/// Resident set size of this process (`VmRSS`), in bytes.
pub fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

/// The README's worst-case memory formula ("Memory") at this configuration.
pub fn memory_bound_bytes(cfg: &Config) -> u64 {
    const KIB: u64 = 1024;
    let c = u64::from(cfg.max_connections);
    let r = u64::from(cfg.max_rooms);
    let l = u64::from(cfg.max_message_size);
    let u = u64::from(cfg.max_room_users);
    let base = 2_662 * KIB + KIB * 2 / 5; // ~2.6 MiB
    // An idle joined connection holds about 0.8 KiB; one with a frame
    // under way 1.1 KiB more (tungstenite's state, built for the frame).
    let per_conn = c * 2 * KIB;
    let reads = (2 * KIB * KIB).max(4 * l) + 2 * l;
    // A room's record, its member array grown to its size, its log
    // header and its index entry.
    let rooms = r * 7 * KIB / 10;
    let outbound = u64::from(cfg.queue_budget_bytes) + l.max(u * 8 * KIB / 10) + 512;
    let heads = u64::from(cfg.pending_limit) * 14 * KIB;
    let ips = (c + 1024) * KIB / 10;
    let history = crate::history::worst_case_bytes(&crate::history::Limits::new(cfg));
    base + per_conn + reads + rooms + outbound + heads + ips + history
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Source;

    fn cfg(vars: &[(&str, &str)]) -> Config {
        Config::load(&Source::from_vars(vars)).unwrap()
    }

    #[test]
    fn memory_bound_matches_the_readme_at_the_defaults() {
        let mib = memory_bound_bytes(&cfg(&[])) as f64 / 1048576.0;
        assert!((41.0..42.5).contains(&mib), "{mib}");
        // Catch-up history is part of it, and off costs nothing.
        let off = memory_bound_bytes(&cfg(&[("HISTORY_SECS", "0")]));
        let defaults = memory_bound_bytes(&cfg(&[]));
        let history = defaults - off;
        assert!((8 << 20..9 << 20).contains(&history), "{history}");
        // The README's figure is the 64-bit one; record sizes shrink on 32-bit.
        #[cfg(target_pointer_width = "64")]
        assert_eq!(history, 9_028_608);
        let small = memory_bound_bytes(&cfg(&[("MAX_CONNECTIONS", "100")]));
        assert!(small < memory_bound_bytes(&cfg(&[])));
    }

    #[test]
    fn usable_addresses() {
        for ok in ["192.168.1.20", "10.0.0.1", "fd00::1", "2001:db8::1"] {
            assert!(lan_usable(ok.parse().unwrap()), "{ok}");
        }
        for no in [
            "127.0.0.1",
            "169.254.3.4",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "::",
        ] {
            assert!(!lan_usable(no.parse().unwrap()), "{no}");
        }
        assert_eq!(
            lan_addresses("192.168.7.7"),
            vec!["192.168.7.7".parse::<IpAddr>().unwrap()]
        );
        assert!(lan_addresses("127.0.0.1").is_empty());
        assert!(lan_addresses("0.0.0.0").iter().all(|ip| lan_usable(*ip)));
    }

    #[test]
    fn hub_json_hides_addresses_from_remote_clients() {
        let c = cfg(&[("HOST", "192.168.7.7")]);
        let local: serde_json::Value = serde_json::from_str(&hub_json(&c, true)).unwrap();
        assert_eq!(local["addresses"][0], "192.168.7.7");
        assert_eq!(local["max_message_bytes"], 10240);
        let remote: serde_json::Value = serde_json::from_str(&hub_json(&c, false)).unwrap();
        assert_eq!(remote["addresses"].as_array().unwrap().len(), 0);
        assert!(remote["hostname"].is_null());
    }

    #[test]
    fn rss_is_read() {
        assert!(rss_bytes() > 100 * 1024);
    }
}
