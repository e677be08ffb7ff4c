//! `ENDPOINT_ALLOW`: where deliveries may go. A comma-separated list of
//! CIDRs (`10.0.0.0/8`, `fd00::/8`), IP addresses, host names
//! (`bot.internal`) and host suffixes (`*.corp.example`). An endpoint whose
//! host is an IP literal must fall in a CIDR or equal an address; a host
//! name must match a name or suffix (names are not resolved here).

use std::net::IpAddr;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Rule {
    Net(IpAddr, u8),
    Host(String),
    Suffix(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointAllow {
    rules: Vec<Rule>,
}

fn bits(ip: IpAddr) -> (u128, u8) {
    match ip {
        IpAddr::V4(v4) => (u128::from(u32::from(v4)), 32),
        IpAddr::V6(v6) => (u128::from(v6), 128),
    }
}

pub(crate) fn in_net(ip: IpAddr, net: IpAddr, prefix: u8) -> bool {
    let (a, width) = bits(ip);
    let (b, net_width) = bits(net);
    if width != net_width {
        return false;
    }
    let shift = u32::from(width - prefix.min(width));
    // A /0 matches everything; `checked_shr` avoids the shift-by-128 overflow.
    a.checked_shr(shift).unwrap_or(0) == b.checked_shr(shift).unwrap_or(0)
}

impl EndpointAllow {
    pub fn parse(list: &str) -> Result<Self, String> {
        let mut rules = Vec::new();
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let rule = if let Some((addr, prefix)) = item.split_once('/') {
                let ip: IpAddr = addr.parse().map_err(|_| format!("{item}: not a CIDR"))?;
                let prefix: u8 = prefix
                    .parse()
                    .map_err(|_| format!("{item}: bad prefix length"))?;
                if prefix > bits(ip).1 {
                    return Err(format!("{item}: prefix longer than the address"));
                }
                Rule::Net(ip, prefix)
            } else if let Ok(ip) = item.parse::<IpAddr>() {
                Rule::Net(ip, bits(ip).1)
            } else if let Some(suffix) = item.strip_prefix("*.") {
                Rule::Suffix(format!(".{}", suffix.to_ascii_lowercase()))
            } else if item
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
            {
                Rule::Host(item.to_ascii_lowercase())
            } else {
                return Err(format!("{item}: not a CIDR, address or host name"));
            };
            rules.push(rule);
        }
        if rules.is_empty() {
            return Err("empty list".into());
        }
        Ok(Self { rules })
    }

    /// Whether a CIDR or address rule covers `ip` at least as narrowly as
    /// `within` (a network of `within_prefix` bits): `169.254.0.0/16` names the
    /// link-local range, `0.0.0.0/0` does not.
    pub(crate) fn names(&self, ip: IpAddr, within_prefix: u8) -> bool {
        self.rules.iter().any(|rule| match rule {
            Rule::Net(net, prefix) => *prefix >= within_prefix && in_net(ip, *net, *prefix),
            _ => false,
        })
    }

    /// Whether deliveries may go to this URL's host.
    pub fn allows(&self, url: &url::Url) -> bool {
        let ip = match url.host() {
            Some(url::Host::Ipv4(v4)) => Some(IpAddr::V4(v4)),
            Some(url::Host::Ipv6(v6)) => Some(IpAddr::V6(v6)),
            Some(url::Host::Domain(_)) => None,
            None => return false,
        };
        let host = url.host_str().unwrap_or("").to_ascii_lowercase();
        self.rules.iter().any(|rule| match (rule, ip) {
            (Rule::Net(net, prefix), Some(ip)) => in_net(ip, *net, *prefix),
            (Rule::Host(name), None) => *name == host,
            (Rule::Suffix(suffix), None) => host.ends_with(suffix.as_str()),
            _ => false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allows(list: &str, url: &str) -> bool {
        EndpointAllow::parse(list)
            .unwrap()
            .allows(&url::Url::parse(url).unwrap())
    }

    #[test]
    fn cidrs_addresses_hosts_and_suffixes() {
        let list = "10.0.0.0/8, 192.168.1.7, fd00::/8, bot.internal, *.corp.example";
        assert!(allows(list, "http://10.20.30.40:8080/"));
        assert!(!allows(list, "http://11.0.0.1/"));
        assert!(allows(list, "http://192.168.1.7/"));
        assert!(!allows(list, "http://192.168.1.8/"));
        assert!(allows(list, "http://[fd12::1]:80/"));
        assert!(allows(list, "https://BOT.internal/x"));
        assert!(allows(list, "https://a.b.corp.example/"));
        assert!(!allows(list, "https://corp.example.evil.com/"));
        assert!(!allows(list, "http://169.254.169.254/"));
        assert!(allows("0.0.0.0/0", "http://8.8.8.8/"));
    }

    #[test]
    fn bad_lists_are_refused() {
        for bad in ["", "10.0.0.0/33", "10.0.0.0/x", "bad host!", "::1/129"] {
            assert!(EndpointAllow::parse(bad).is_err(), "{bad}");
        }
    }
}
