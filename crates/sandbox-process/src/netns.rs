//! A fresh network namespace per environment, holding the Runtime API listener.
//!
//! The server creates the namespace itself, on a short-lived thread (namespace membership is
//! per thread), brings its loopback up and binds `127.0.0.1:9001` there. The listener
//! socket stays in that namespace for its whole life, so the dispatcher can serve it from
//! any thread, and the runtime inside reaches it while nothing outside can. The namespace
//! has no other interface — a function has loopback only — unless the function asked for
//! egress ([`crate::egress`]).

use std::fs::File;
use std::io;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, OwnedFd};

use nix::sched::{CloneFlags, unshare};

use crate::egress::EgressLease;

/// Where the Runtime API listens inside every environment.
pub const RUNTIME_API_ADDR: &str = "127.0.0.1:9001";

/// A network namespace with the Runtime API listener bound inside it.
pub struct NetNs {
    /// Keeps the namespace alive and lets the init join it.
    pub fd: OwnedFd,
    pub listener: TcpListener,
    /// The outbound link, for a function with egress; held as long as the environment.
    pub egress: Option<EgressLease>,
}

/// Creates the namespace; with `egress`, also the veth link out (see [`crate::egress`]).
pub fn create(egress: Option<EgressLease>) -> io::Result<NetNs> {
    let ns = ember_sandbox::affinity::unbound(|| {
        std::thread::Builder::new()
            .name("ember-netns".into())
            .spawn(move || -> io::Result<NetNs> {
                unshare(CloneFlags::CLONE_NEWNET)?;
                loopback_up()?;
                let listener = TcpListener::bind(RUNTIME_API_ADDR)?;
                listener.set_nonblocking(true)?;
                let fd = File::open("/proc/thread-self/ns/net")?.into();
                // Programs started from this thread run in the new namespace.
                if let Some(lease) = &egress {
                    lease.configure_inside()?;
                }
                Ok(NetNs {
                    fd,
                    listener,
                    egress,
                })
            })
    })?
    .join()
    .map_err(|_| io::Error::other("the namespace thread panicked"))??;
    if let Some(lease) = &ns.egress {
        lease.configure_host()?;
    }
    Ok(ns)
}

/// `ip link set lo up`, through the classic interface ioctls.
#[allow(unsafe_code)]
fn loopback_up() -> io::Result<()> {
    // Any AF_INET socket will do as the ioctl handle; binding 0.0.0.0 needs no interface.
    let sock = std::net::UdpSocket::bind("0.0.0.0:0")?;
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads into the ifreq we own; the descriptor is valid.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: ifru_flags is the active union member after SIOCGIFFLAGS.
    unsafe { req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short };
    // SAFETY: as above, with the flags we just set.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
