//! Per-address accounting at the edge: how many connections (or handshakes) each client address holds, under a cap, released when the slot drops.
//!
//! The edge listener takes a connection's slot at accept, before the connection may wait
//! for a TLS handshake slot, so one address cannot fill the handshake pool; the slot then
//! travels with the connection to the HTTP loop ([`Admitted`]) and is released at the
//! WebSocket upgrade or the close.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Semaphore;

/// Counts per client address; cheap to clone (clones share the counts).
#[derive(Clone, Default)]
pub struct PerIp {
    counts: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// One counted place of one address; dropping it gives the place back.
pub struct Slot {
    per_ip: PerIp,
    ip: IpAddr,
}

impl PerIp {
    fn counts(&self) -> MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A place for `ip` if it holds fewer than `cap` (0: no cap).
    pub fn try_admit(&self, ip: IpAddr, cap: usize) -> Option<Slot> {
        let mut counts = self.counts();
        let count = counts.entry(ip).or_insert(0);
        if cap > 0 && *count >= cap {
            return None;
        }
        *count += 1;
        Some(Slot {
            per_ip: self.clone(),
            ip,
        })
    }

    /// Places `ip` holds now.
    #[cfg(test)]
    fn held(&self, ip: IpAddr) -> usize {
        self.counts().get(&ip).copied().unwrap_or(0)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.per_ip.counts();
        if let Some(count) = counts.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

/// Per address, a share of a pool: connections past it wait their turn (they hold no place
/// in the pool meanwhile) rather than being refused, so a burst from one school's NAT is
/// served in turn while idle connections from one address cannot fill the pool.
#[derive(Clone)]
pub struct Shares {
    size: usize,
    by_ip: Arc<Mutex<HashMap<IpAddr, Arc<Semaphore>>>>,
}

/// One connection's place in its address's share (or its wait for one); given back on drop.
pub struct Share {
    shares: Shares,
    ip: IpAddr,
    /// Always `Some` until dropped; every clone and drop of it happens under the map's
    /// lock, so the count tells when the address's last holder leaves.
    sem: Option<Arc<Semaphore>>,
    held: bool,
}

impl Shares {
    pub fn new(size: usize) -> Shares {
        Shares {
            size: size.max(1),
            by_ip: Arc::default(),
        }
    }

    fn by_ip(&self) -> MutexGuard<'_, HashMap<IpAddr, Arc<Semaphore>>> {
        self.by_ip.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for a place in `ip`'s share. Cancel-safe: a dropped wait leaves nothing behind.
    pub async fn acquire(&self, ip: IpAddr) -> Share {
        let sem = {
            let mut by_ip = self.by_ip();
            let sem = by_ip
                .entry(ip)
                .or_insert_with(|| Arc::new(Semaphore::new(self.size)));
            sem.clone()
        };
        let mut share = Share {
            shares: self.clone(),
            ip,
            sem: Some(sem),
            held: false,
        };
        if let Some(sem) = &share.sem {
            // Never closed; the permit is given back by hand in `drop`.
            if let Ok(permit) = sem.acquire().await {
                permit.forget();
                share.held = true;
            }
        }
        share
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        let mut by_ip = self.shares.by_ip();
        let Some(sem) = self.sem.take() else {
            return;
        };
        if self.held {
            sem.add_permits(1);
        }
        // The map's and ours: no one else holds or waits for this address's share.
        if Arc::strong_count(&sem) == 2 {
            by_ip.remove(&self.ip);
        }
        drop(sem);
    }
}

/// A connection the listener already counted under the per-address cap.
pub struct Admitted {
    pub remote: SocketAddr,
    pub slot: Slot,
}

/// What a listener yields as a connection's address: plain, to be counted by the HTTP loop,
/// or [`Admitted`] with its slot already taken.
pub trait Remote: Send + 'static {
    /// The address and its slot; `Err(address)` when the address is at its cap.
    fn admit(self, per_ip: &PerIp, cap: usize) -> Result<(SocketAddr, Slot), SocketAddr>;
}

impl Remote for SocketAddr {
    fn admit(self, per_ip: &PerIp, cap: usize) -> Result<(SocketAddr, Slot), SocketAddr> {
        per_ip
            .try_admit(self.ip(), cap)
            .map(|slot| (self, slot))
            .ok_or(self)
    }
}

impl Remote for Admitted {
    fn admit(self, _: &PerIp, _: usize) -> Result<(SocketAddr, Slot), SocketAddr> {
        Ok((self.remote, self.slot))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_capped_per_address_and_given_back_on_drop() {
        let per_ip = PerIp::default();
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let held: Vec<Slot> = (0..2).map(|_| per_ip.try_admit(a, 2).unwrap()).collect();
        assert!(per_ip.try_admit(a, 2).is_none(), "a third place for a");
        assert!(per_ip.try_admit(b, 2).is_some(), "b is counted apart");
        drop(held);
        assert_eq!(per_ip.held(a), 0);
        assert!(per_ip.try_admit(a, 0).is_some(), "0: no cap");
    }

    #[tokio::test]
    async fn a_share_makes_later_connections_wait_and_forgets_quiet_addresses() {
        let shares = Shares::new(2);
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let first = shares.acquire(a).await;
        let _second = shares.acquire(a).await;
        let third = shares.acquire(a);
        tokio::pin!(third);
        assert!(
            futures_util::FutureExt::now_or_never(third.as_mut()).is_none(),
            "a third waits"
        );
        let _other = shares.acquire(b).await;
        drop(first);
        let third = third.await;
        assert!(third.held);
        // A wait given up (a deadline) leaves nothing behind either.
        drop(third);
        drop(_second);
        drop(_other);
        let waiting = shares.acquire(a);
        drop(waiting);
        assert!(shares.by_ip().is_empty());
    }
}
