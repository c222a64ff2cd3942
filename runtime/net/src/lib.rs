//! Listening sockets for the runtime's and the operator's addresses. Kubernetes probes and
//! scrapes a pod on its pod IP, which is IPv4, IPv6 or both depending on the cluster, so the
//! pods listen on `[::]`: here that takes IPv6 and IPv4 connections alike (`IPV6_V6ONLY` off,
//! whatever the node's `net.ipv6.bindv6only`), and falls back to `0.0.0.0` on a kernel without
//! IPv6, so one default serves single-stack IPv4, single-stack IPv6 and dual-stack clusters.

#![forbid(unsafe_code)]

use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};

use socket2::{Domain, Protocol, Socket, Type};

/// Connections the kernel queues for a listener before they are accepted.
const BACKLOG: i32 = 1024;

/// A bound, non-blocking listener; `fell_back` says why it listens on `0.0.0.0` when `[::]`
/// was asked for.
#[derive(Debug)]
pub struct Listening {
    /// The listener (non-blocking, for `tokio::net::TcpListener::from_std`).
    pub listener: TcpListener,
    /// Why `[::]` could not be used (no IPv6 on this kernel or host), when it fell back.
    pub fell_back: Option<io::Error>,
}

/// Listen on `addr`. `[::]:port` listens on IPv6 and IPv4, or on `0.0.0.0:port` when the host
/// has no IPv6; any other address is bound as it is.
pub fn listen(addr: SocketAddr) -> io::Result<Listening> {
    let any_v6 = addr.is_ipv6() && addr.ip().is_unspecified();
    let fall_back = |e: io::Error| -> io::Result<Listening> {
        let v4 = SocketAddr::from((Ipv4Addr::UNSPECIFIED, addr.port()));
        let listener = open(v4).map_err(Failed::into_inner)?;
        Ok(Listening {
            listener,
            fell_back: Some(e),
        })
    };
    match open(addr) {
        Ok(listener) => Ok(Listening {
            listener,
            fell_back: None,
        }),
        // No IPv6 socket at all (a kernel without IPv6), or no IPv6 address to bind.
        Err(Failed::Socket(e)) if any_v6 => fall_back(e),
        Err(Failed::Bind(e)) if any_v6 && e.kind() == io::ErrorKind::AddrNotAvailable => {
            fall_back(e)
        }
        Err(e) => Err(e.into_inner()),
    }
}

/// [`listen`] for a tokio server: the listener registered with the running tokio runtime, and a
/// fall-back to IPv4 logged as a warning.
pub fn listen_tokio(addr: SocketAddr) -> io::Result<tokio::net::TcpListener> {
    let bound = listen(addr)?;
    if let Some(why) = &bound.fell_back {
        tracing::warn!(%addr, error = %why, "no IPv6 on this host: listening on IPv4 only");
    }
    tokio::net::TcpListener::from_std(bound.listener)
}

/// Which step of [`open`] failed: a host without IPv6 fails to create an IPv6 socket at all.
enum Failed {
    Socket(io::Error),
    Bind(io::Error),
}

impl Failed {
    fn into_inner(self) -> io::Error {
        match self {
            Failed::Socket(e) | Failed::Bind(e) => e,
        }
    }
}

fn open(addr: SocketAddr) -> Result<TcpListener, Failed> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
        .map_err(Failed::Socket)?;
    let setup = || -> io::Result<()> {
        if addr.is_ipv6() && addr.ip().is_unspecified() {
            socket.set_only_v6(false)?;
        }
        // As std and tokio do on Unix: a restarted process may bind while old connections of
        // the previous one linger in TIME_WAIT.
        #[cfg(unix)]
        socket.set_reuse_address(true)?;
        socket.bind(&addr.into())?;
        socket.listen(BACKLOG)?;
        socket.set_nonblocking(true)
    };
    setup().map_err(Failed::Bind)?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::io::{Read, Write};
    use std::net::{Ipv6Addr, TcpStream};

    fn accepts(listener: &TcpListener, from: SocketAddr) -> bool {
        let Ok(mut client) = TcpStream::connect(from) else {
            return false;
        };
        listener.set_nonblocking(false).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        client.write_all(b"x").unwrap();
        let mut byte = [0u8; 1];
        server.read_exact(&mut byte).unwrap();
        byte == *b"x"
    }

    /// `[::]` takes IPv4 and IPv6 connections alike (where the host has IPv6; else it falls
    /// back to IPv4 and says so).
    #[test]
    fn any_v6_listens_on_both_families() {
        let l = listen(SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0))).unwrap();
        let port = l.listener.local_addr().unwrap().port();
        assert!(accepts(
            &l.listener,
            SocketAddr::from((Ipv4Addr::LOCALHOST, port))
        ));
        match &l.fell_back {
            None => {
                assert!(l.listener.local_addr().unwrap().is_ipv6());
                assert!(accepts(
                    &l.listener,
                    SocketAddr::from((Ipv6Addr::LOCALHOST, port))
                ));
            }
            Some(why) => assert!(l.listener.local_addr().unwrap().is_ipv4(), "{why}"),
        }
    }

    /// Other addresses are bound as they are: IPv4 stays IPv4, and a port in use is an error,
    /// not a fall-back.
    #[test]
    fn other_addresses_and_busy_ports() {
        let l = listen(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).unwrap();
        let addr = l.listener.local_addr().unwrap();
        assert!(addr.is_ipv4() && l.fell_back.is_none());
        let again = listen(addr).unwrap_err();
        assert_eq!(again.kind(), io::ErrorKind::AddrInUse);
    }
}
