//! Where deliveries may go, by default and with `ENDPOINT_ALLOW`.
//!
//! Whoever registers a puppet chooses where the manager POSTs, so by default
//! no delivery goes to the addresses an attacker would aim at from inside a
//! cloud machine: link-local ranges (where metadata services answer), the
//! metadata services' own addresses, and the unspecified addresses (which
//! reach the local host). An operator who really runs a puppet there names
//! the range in `ENDPOINT_ALLOW`. Private ranges and loopback stay allowed:
//! puppets live there.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::allow::in_net;
use super::EndpointAllow;

/// A refused range: network, prefix length, and what it is.
struct Refused(IpAddr, u8, &'static str);

const REFUSED: &[Refused] = &[
    Refused(IpAddr::V4(Ipv4Addr::new(169, 254, 0, 0)), 16, "link-local"),
    Refused(
        IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0)),
        10,
        "link-local",
    ),
    Refused(
        IpAddr::V6(Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)),
        128,
        "cloud-metadata",
    ),
    Refused(
        IpAddr::V4(Ipv4Addr::new(100, 100, 100, 200)),
        32,
        "cloud-metadata",
    ),
    Refused(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 8, "unspecified"),
    Refused(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 128, "unspecified"),
];

/// Why a delivery may not go somewhere; the text is safe to show and store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct EndpointRefusal(String);

/// The one rule for endpoints: applied at registration, when an operator
/// moves a puppet, before every attempt, and to every address a host name
/// resolves to when the connection is made.
#[derive(Debug, Clone, Default)]
pub struct EndpointPolicy {
    allow: Option<EndpointAllow>,
}

impl EndpointPolicy {
    pub fn new(allow: Option<EndpointAllow>) -> Self {
        Self { allow }
    }

    /// What the URL alone decides: `ENDPOINT_ALLOW`, and a refused range when
    /// the host is an address.
    pub fn check_url(&self, url: &url::Url) -> Result<(), EndpointRefusal> {
        if let Some(allow) = &self.allow {
            if !allow.allows(url) {
                return Err(EndpointRefusal("not allowed by ENDPOINT_ALLOW".into()));
            }
        }
        let ip = match url.host() {
            Some(url::Host::Ipv4(v4)) => IpAddr::V4(v4),
            Some(url::Host::Ipv6(v6)) => IpAddr::V6(v6),
            _ => return Ok(()),
        };
        self.refusal(ip).map_or(Ok(()), |what| {
            Err(EndpointRefusal(format!("{ip} is {what}")))
        })
    }

    /// An address a host name resolved to.
    pub fn check_resolved(&self, host: &str, ip: IpAddr) -> Result<(), EndpointRefusal> {
        self.refusal(ip).map_or(Ok(()), |what| {
            Err(EndpointRefusal(format!("{host} resolves to {ip}, {what}")))
        })
    }

    /// "a link-local address, ..." when `ip` is refused.
    fn refusal(&self, ip: IpAddr) -> Option<String> {
        // `::ffff:169.254.169.254` reaches the same host as `169.254.169.254`.
        let ip = ip.to_canonical();
        let Refused(_, prefix, what) = REFUSED
            .iter()
            .find(|Refused(net, prefix, _)| in_net(ip, *net, *prefix))?;
        if self.allow.as_ref().is_some_and(|a| a.names(ip, *prefix)) {
            return None;
        }
        Some(format!(
            "a {what} address; deliveries go there only if ENDPOINT_ALLOW names it"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(allow: Option<&str>, url: &str) -> Result<(), EndpointRefusal> {
        let allow = allow.map(|a| EndpointAllow::parse(a).unwrap());
        EndpointPolicy::new(allow).check_url(&url::Url::parse(url).unwrap())
    }

    #[test]
    fn metadata_link_local_and_unspecified_addresses_are_refused_by_default() {
        for url in [
            "http://169.254.169.254/latest/meta-data",
            "http://169.254.0.1:8080/",
            "http://[fe80::1]/",
            "http://[febf::1]/",
            "http://[fd00:ec2::254]/",
            "http://100.100.100.200/",
            "http://0.0.0.0:7777/",
            "http://[::]/",
            "http://[::ffff:169.254.169.254]/",
        ] {
            let refusal = check(None, url).unwrap_err().to_string();
            assert!(
                refusal.contains("ENDPOINT_ALLOW names it"),
                "{url}: {refusal}"
            );
        }
    }

    #[test]
    fn private_ranges_loopback_and_names_stay_allowed() {
        for url in [
            "http://127.0.0.1:8788/",
            "http://[::1]/",
            "http://10.1.2.3/",
            "http://192.168.0.9/",
            "http://172.16.0.1/",
            "http://[fd00::1]/",
            "http://[fd00:ec2::253]/",
            "http://100.100.100.201/",
            "http://169.255.0.1/",
            "http://puppet.internal/",
        ] {
            assert_eq!(check(None, url), Ok(()), "{url}");
        }
    }

    #[test]
    fn only_a_rule_that_names_the_range_lets_it_through() {
        let url = "http://169.254.10.20/";
        assert_eq!(check(Some("169.254.0.0/16"), url), Ok(()));
        assert_eq!(check(Some("169.254.10.20"), url), Ok(()));
        assert!(
            check(Some("0.0.0.0/0"), url).is_err(),
            "anywhere is not a name"
        );
        assert!(check(Some("169.0.0.0/8"), url).is_err());
        assert!(check(Some("10.0.0.0/8"), url)
            .unwrap_err()
            .to_string()
            .contains("not allowed by ENDPOINT_ALLOW"));
    }

    #[test]
    fn resolved_addresses_are_checked_with_the_name_in_the_message() {
        let policy = EndpointPolicy::default();
        let ip: IpAddr = "169.254.169.254".parse().unwrap();
        let refusal = policy.check_resolved("rebind.example", ip).unwrap_err();
        assert_eq!(
            refusal.to_string(),
            "rebind.example resolves to 169.254.169.254, a link-local address; \
             deliveries go there only if ENDPOINT_ALLOW names it"
        );
        assert_eq!(
            policy.check_resolved("ok.example", "10.0.0.1".parse().unwrap()),
            Ok(())
        );
    }
}
