//! The endpoint policy where addresses are known: a host name is resolved and
//! every address it gives is checked at registration and again when the
//! delivery connects, so a name that later resolves elsewhere (DNS rebinding)
//! is refused too. The delivery client resolves through this guard, so the
//! address checked is the address connected to.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;

use crate::domain::{EndpointPolicy, EndpointRefusal};

/// A registration does not wait longer than this for a name to resolve; a
/// name that does not resolve yet is accepted and checked when connecting.
const REGISTRATION_LOOKUP: Duration = Duration::from_secs(2);

/// Turns a host name into addresses (the system's resolver; tests bring their own).
pub trait HostResolver: Send + Sync + 'static {
    fn lookup<'a>(&'a self, host: &'a str) -> BoxFuture<'a, std::io::Result<Vec<IpAddr>>>;
}

/// `getaddrinfo`, as the HTTP client would use by default.
pub struct SystemResolver;

impl HostResolver for SystemResolver {
    fn lookup<'a>(&'a self, host: &'a str) -> BoxFuture<'a, std::io::Result<Vec<IpAddr>>> {
        Box::pin(async move {
            Ok(tokio::net::lookup_host((host, 0))
                .await?
                .map(|a| a.ip())
                .collect())
        })
    }
}

#[derive(Clone)]
pub struct EndpointGuard {
    policy: EndpointPolicy,
    resolver: Arc<dyn HostResolver>,
}

impl EndpointGuard {
    pub fn new(policy: EndpointPolicy, resolver: Arc<dyn HostResolver>) -> Self {
        Self { policy, resolver }
    }

    /// What the URL alone decides (before every attempt).
    pub fn check_url(&self, url: &url::Url) -> Result<(), EndpointRefusal> {
        self.policy.check_url(url)
    }

    /// At registration: the URL, then every address its name resolves to now.
    pub async fn check_registration(&self, url: &url::Url) -> Result<(), EndpointRefusal> {
        self.policy.check_url(url)?;
        let Some(url::Host::Domain(host)) = url.host() else {
            return Ok(());
        };
        match tokio::time::timeout(REGISTRATION_LOOKUP, self.resolver.lookup(host)).await {
            Ok(Ok(addresses)) => addresses
                .into_iter()
                .try_for_each(|ip| self.policy.check_resolved(host, ip)),
            _ => Ok(()),
        }
    }
}

impl reqwest::dns::Resolve for EndpointGuard {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let guard = self.clone();
        Box::pin(async move {
            let host = name.as_str();
            let addresses = guard.resolver.lookup(host).await?;
            for ip in &addresses {
                guard.policy.check_resolved(host, *ip)?;
            }
            // The client puts the URL's port in place of this one.
            let addrs: reqwest::dns::Addrs =
                Box::new(addresses.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(addrs)
        })
    }
}
