//! The "wifi" step of the host device: the network is the host's, so bringing it up means
//! resolving the broker and finding the local address the device talks from.

use std::io;
use std::net::{IpAddr, SocketAddr};

use tokio::net::UdpSocket;

/// What the board would learn from DHCP and DNS.
#[derive(Debug, Clone)]
pub struct NetInfo {
    /// Every address of the endpoint, in resolver order.
    pub remote: Vec<SocketAddr>,
    /// The local address the host routes to the first of them from.
    pub local: IpAddr,
}

/// Resolve `host:port` and find the local address that reaches it.
pub async fn up(host: &str, port: u16) -> io::Result<NetInfo> {
    let remote: Vec<SocketAddr> = tokio::net::lookup_host((host, port)).await?.collect();
    let first = *remote
        .first()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address"))?;
    Ok(NetInfo {
        local: local_addr_towards(first).await?,
        remote,
    })
}

/// The local address of a UDP socket connected to `remote`: the kernel picks the route
/// and source address without sending anything.
pub async fn local_addr_towards(remote: SocketAddr) -> io::Result<IpAddr> {
    let any: SocketAddr = if remote.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(any).await?;
    socket.connect(remote).await?;
    Ok(socket.local_addr()?.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn loopback_is_reached_from_loopback() {
        let info = up("127.0.0.1", 8883).await.unwrap();
        assert_eq!(info.remote, vec![SocketAddr::from(([127, 0, 0, 1], 8883))]);
        assert_eq!(info.local, IpAddr::from([127, 0, 0, 1]));
    }

    #[tokio::test]
    async fn unknown_host_is_an_error() {
        assert!(up("no-such-host.invalid", 8883).await.is_err());
    }
}
