//! Outbound networking for functions that ask for it (`Network: egress`).
//!
//! Such an environment's network namespace gets, beside loopback, one end of a veth pair
//! (`eth0`, a /30 from this server's pool) with a default route to the other end, which
//! stays on the host. An nftables table of this server's own masquerades what leaves the
//! pool for the outside, drops what one environment sends another, and drops what an
//! environment sends to Ember's API port — so a function reaches the network and the host's
//! services (a database on the host, say) but never Ember itself or another environment. The
//! Runtime API stays on each namespace's loopback, where no other environment can reach.
//!
//! Each server on a host claims its own /20 in `10.128.0.0/10` (a lock file per pool under
//! `/run/ember/egress`), so servers never share addresses. It needs `ip` (iproute2) and
//! `nft` (nftables), and turns on IPv4 forwarding on the host.

use std::collections::BTreeSet;
use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

/// How many environments with egress one server may hold at once: /30s in its /20.
const POOL: u32 = 1 << 10;

/// Servers' pools are /20s in `10.128.0.0/10`: 1,024 of them.
const SLOTS: u32 = 1 << 10;

/// Where servers on one host claim their pools, one lock file per pool.
const SLOT_LOCKS: &str = "/run/ember/egress";

/// The egress network of one server: its address pool and its nftables table.
#[derive(Debug)]
pub struct EgressNetwork {
    /// The pool, a /20 in `10.128.0.0/10`.
    base: Ipv4Addr,
    /// Held for the server's life: no other server on this host takes the same pool.
    _claim: nix::fcntl::Flock<std::fs::File>,
    /// nftables table name, unique to the server.
    table: String,
    /// Prefix of the host-side interface names.
    prefix: String,
    ip: PathBuf,
    nft: PathBuf,
    api_port: u16,
    leases: Mutex<BTreeSet<u32>>,
}

/// One environment's link: released (its interface goes with the namespace) on drop.
pub struct EgressLease {
    network: Arc<EgressNetwork>,
    index: u32,
    pub host: Ipv4Addr,
    pub inside: Ipv4Addr,
    pub host_interface: String,
}

impl Drop for EgressLease {
    fn drop(&mut self) {
        self.network
            .leases
            .lock()
            .expect("lease lock")
            .remove(&self.index);
    }
}

/// Runs `program` with `script` on stdin; an error carries what it printed.
pub(crate) fn run_script(program: &Path, args: &[&str], script: &str) -> io::Result<()> {
    run(program, args, Some(script)).map(drop)
}

/// Runs `program`, with `script` on stdin if given: what it printed on stdout, or an error
/// carrying what it printed on stderr.
fn run(program: &Path, args: &[&str], script: Option<&str>) -> io::Result<String> {
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(if script.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = ember_sandbox::affinity::unbound(|| command.spawn())?;
    if let Some(script) = script {
        child
            .stdin
            .take()
            .expect("stdin is piped")
            .write_all(script.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(io::Error::other(format!(
            "{} failed: {}",
            program.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// The first address of the pools.
const POOLS: Ipv4Addr = Ipv4Addr::new(10, 128, 0, 0);

/// The pool of `slot`.
fn pool_base(slot: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(POOLS) + slot * (POOL * 4))
}

/// The slot whose pool begins at `base`, if one does.
fn pool_slot(base: Ipv4Addr) -> Option<u32> {
    let offset = u32::from(base).checked_sub(u32::from(POOLS))?;
    (offset % (POOL * 4) == 0 && offset / (POOL * 4) < SLOTS).then_some(offset / (POOL * 4))
}

/// Locks `slot`'s file, unless a live server holds it.
fn lock_slot(slot: u32) -> io::Result<Option<nix::fcntl::Flock<std::fs::File>>> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(Path::new(SLOT_LOCKS).join(format!("{slot}.lock")))?;
    Ok(nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).ok())
}

/// Claims a free pool, starting from one derived from the server's hash so that a server
/// usually gets the same pool each time.
fn claim_pool(hash: &str) -> io::Result<(Ipv4Addr, nix::fcntl::Flock<std::fs::File>)> {
    std::fs::create_dir_all(SLOT_LOCKS)?;
    let start = u32::from_str_radix(hash.get(..3).unwrap_or("0"), 16).unwrap_or(0) % SLOTS;
    for offset in 0..SLOTS {
        let slot = (start + offset) % SLOTS;
        if let Some(claim) = lock_slot(slot)? {
            return Ok((pool_base(slot), claim));
        }
    }
    Err(io::Error::other(
        "every egress address pool on this host is taken",
    ))
}

/// Ember's tables in `ruleset` (`nft list ruleset`), each with the pool its rules name.
fn ember_tables(ruleset: &str) -> Vec<(String, Option<Ipv4Addr>)> {
    let mut tables = Vec::new();
    // Whether the lines read now are a rule of the last of `tables`.
    let mut in_ember = false;
    for line in ruleset.lines().map(str::trim) {
        if line.starts_with("table ") {
            let name = line
                .strip_prefix("table ip ")
                .and_then(|rest| rest.strip_suffix(" {"))
                .filter(|name| name.starts_with("ember_"));
            in_ember = name.is_some();
            tables.extend(name.map(|name| (name.to_owned(), None)));
        } else if in_ember && let Some((_, pool @ None)) = tables.last_mut() {
            *pool = line
                .split_once("saddr ")
                .and_then(|(_, rest)| rest.split_once('/'))
                .and_then(|(address, _)| address.parse().ok());
        }
    }
    tables
}

impl EgressNetwork {
    /// Prepares the egress network of server `instance` (its `ember-<hash>` name), whose API
    /// listens on `api_port`: installs the nftables table and turns on forwarding. Fails,
    /// saying what is missing, where the host cannot do it.
    pub fn start(instance: &str, api_port: u16) -> io::Result<Arc<EgressNetwork>> {
        let ip = crate::find_program("ip")
            .ok_or_else(|| io::Error::other("`ip` is missing (apt-get install iproute2)"))?;
        let nft = crate::find_program("nft")
            .ok_or_else(|| io::Error::other("`nft` is missing (apt-get install nftables)"))?;
        let hash = instance.trim_start_matches("ember-");
        let (base, claim) = claim_pool(hash)?;
        let network = EgressNetwork {
            base,
            _claim: claim,
            table: format!("ember_{hash}"),
            prefix: format!("e{}", hash.get(..6).unwrap_or(hash)),
            ip,
            nft,
            api_port,
            leases: Mutex::new(BTreeSet::new()),
        };
        network.install()?;
        Ok(Arc::new(network))
    }

    /// The pool, as nftables writes it.
    fn pool(&self) -> String {
        format!("{}/20", self.base)
    }

    /// Removes the tables of servers that are gone: one killed outright (SIGKILL, an OOM
    /// kill, a power cut) never removed its own, and every table left behind hooks each
    /// packet the host sends, loopback included. A table is stale when no live server
    /// holds its pool's lock.
    fn sweep(&self) {
        let ruleset = match run(&self.nft, &["list", "ruleset"], None) {
            Ok(ruleset) => ruleset,
            Err(e) => {
                tracing::warn!(error = %e, "could not list the nftables tables");
                return;
            }
        };
        for (table, pool) in ember_tables(&ruleset) {
            if table == self.table {
                continue;
            }
            // A table of this server's own pool is a dead server's (this one holds the
            // pool); any other pool's lock is held while its table goes, so no server
            // claims the pool meanwhile.
            let _unclaimed = if pool == Some(self.base) {
                None
            } else {
                match pool.and_then(pool_slot).map_or(Ok(None), lock_slot) {
                    Ok(Some(claim)) => Some(claim),
                    _ => continue,
                }
            };
            match run_script(
                &self.nft,
                &["-f", "-"],
                &format!("delete table ip {table}\n"),
            ) {
                Ok(()) => {
                    tracing::info!(table, "removed the egress table of a server that is gone")
                }
                Err(e) => {
                    tracing::warn!(table, error = %e, "could not remove a stale egress table")
                }
            }
        }
    }

    fn install(&self) -> io::Result<()> {
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")?;
        self.sweep();
        let (table, pool, port) = (&self.table, self.pool(), self.api_port);
        // Deleting first makes the install idempotent (a crashed server's table is replaced).
        let _ = run_script(
            &self.nft,
            &["-f", "-"],
            &format!("delete table ip {table}\n"),
        );
        run_script(
            &self.nft,
            &["-f", "-"],
            &format!(
                "table ip {table} {{
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    ip saddr {pool} ip daddr != {pool} masquerade
  }}
  chain forward {{
    type filter hook forward priority filter; policy accept;
    ip saddr {pool} ip daddr {pool} drop
  }}
  chain input {{
    type filter hook input priority filter; policy accept;
    ip saddr {pool} tcp dport {port} drop
  }}
}}
"
            ),
        )
    }

    /// Removes the table; at server shutdown, once every environment is gone.
    pub fn stop(&self) {
        let script = format!("delete table ip {}\n", self.table);
        if let Err(e) = run_script(&self.nft, &["-f", "-"], &script) {
            tracing::warn!(error = %e, "could not remove the egress nftables table");
        }
    }

    /// Takes a free /30 for one environment.
    pub fn lease(self: &Arc<Self>) -> io::Result<EgressLease> {
        let mut leases = self.leases.lock().expect("lease lock");
        let index = (0..POOL)
            .find(|i| !leases.contains(i))
            .ok_or_else(|| io::Error::other("the egress address pool is exhausted"))?;
        leases.insert(index);
        let base = u32::from(self.base) + index * 4;
        Ok(EgressLease {
            network: Arc::clone(self),
            index,
            host: Ipv4Addr::from(base + 1),
            inside: Ipv4Addr::from(base + 2),
            host_interface: format!("{}{index:x}", self.prefix),
        })
    }
}

impl EgressLease {
    /// Run on the namespace's own thread: creates the pair with `eth0` inside and its peer
    /// in the server's (the thread group leader's) namespace, and routes through it.
    pub(crate) fn configure_inside(&self) -> io::Result<()> {
        let script = format!(
            "link add eth0 type veth peer name {host_if} netns {server}
addr add {inside}/30 dev eth0
link set eth0 up
route add default via {host} dev eth0 onlink
",
            host_if = self.host_interface,
            server = std::process::id(),
            inside = self.inside,
            host = self.host,
        );
        run_script(&self.network.ip, &["-batch", "-"], &script)
    }

    /// Run from the host's namespace, after [`EgressLease::configure_inside`].
    pub(crate) fn configure_host(&self) -> io::Result<()> {
        let script = format!(
            "addr add {host}/30 dev {host_if}
link set {host_if} up
",
            host = self.host,
            host_if = self.host_interface,
        );
        run_script(&self.network.ip, &["-batch", "-"], &script)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ember_tables_are_found_with_their_pools_and_others_are_left_out() {
        let ruleset = "table inet filter {
	chain input {
		type filter hook input priority filter; policy accept;
		ip saddr 10.128.0.0/20 drop
	}
}
table ip ember_f08817a39d77 {
	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		ip saddr 10.176.128.0/20 ip daddr != 10.176.128.0/20 masquerade
	}
}
table ip ember_01a2705ceab4 {
}
table ip6 ember_6e55fa6c5eb6 {
}
";
        assert_eq!(
            ember_tables(ruleset),
            vec![
                (
                    "ember_f08817a39d77".to_owned(),
                    Some(Ipv4Addr::new(10, 176, 128, 0))
                ),
                ("ember_01a2705ceab4".to_owned(), None),
            ]
        );
    }

    #[test]
    fn a_pool_address_leads_back_to_its_slot() {
        assert_eq!(pool_slot(pool_base(0)), Some(0));
        assert_eq!(pool_slot(pool_base(SLOTS - 1)), Some(SLOTS - 1));
        assert_eq!(pool_slot(Ipv4Addr::new(10, 176, 128, 0)), Some(776));
        // Not the start of a pool, or outside them all.
        assert_eq!(pool_slot(Ipv4Addr::new(10, 176, 128, 4)), None);
        assert_eq!(pool_slot(Ipv4Addr::new(10, 0, 0, 0)), None);
        assert_eq!(pool_slot(Ipv4Addr::new(10, 192, 0, 0)), None);
    }
}
