//! A function version's warm pool as a state machine: which idle environment a call gets,
//! which ones the keep-alive policy reclaims, and when one is pre-warmed.
//!
//! Generic over the environment handle so that the live dispatcher (real sandboxes) and
//! the simulator (numbers) run the same code. The caller owns the lock and the clock and
//! does the I/O: starting and destroying what this decides.
//!
//! Selection: a provisioned environment first (so on-demand ones are only used beyond the
//! provisioned concurrency), then the most recently used one (so the others age out and
//! the pool shrinks after a burst).

use std::time::{Duration, Instant};

use crate::keep_alive::{IdleHistogram, KeepAlive};

/// An idle environment.
#[derive(Debug)]
struct Idle<E> {
    env: E,
    /// When it is reclaimed; `None` for a provisioned environment, kept while configured.
    until: Option<Instant>,
}

/// One version's environments, as far as the policies are concerned.
#[derive(Debug)]
pub struct Pool<E> {
    /// Most recently released last.
    idle: Vec<Idle<E>>,
    busy: u32,
    histogram: IdleHistogram,
    /// When the last call ended with no other in flight.
    last_end: Option<Instant>,
    /// A pre-warm the keep-alive plan asked for: when, and for how long to keep it.
    prewarm: Option<(Instant, Duration)>,
}

impl<E> Default for Pool<E> {
    fn default() -> Self {
        Pool {
            idle: Vec::new(),
            busy: 0,
            histogram: IdleHistogram::default(),
            last_end: None,
            prewarm: None,
        }
    }
}

/// Environment counts of a pool.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub idle: u32,
    pub busy: u32,
    /// Idle provisioned environments (also counted in `idle`).
    pub provisioned_idle: u32,
}

impl<E> Pool<E> {
    /// A call arrives: records the function's idle time, counts the call as busy, and
    /// hands out an idle environment if there is one. Environments for which `usable` is
    /// false (a runtime that died while idle) are moved to `dead`, never handed out.
    pub fn acquire(
        &mut self,
        policy: &KeepAlive,
        now: Instant,
        usable: impl Fn(&E) -> bool,
        dead: &mut Vec<E>,
    ) -> Option<(E, bool)> {
        if self.busy == 0
            && let Some(end) = self.last_end.take()
        {
            self.histogram
                .record(policy, now.saturating_duration_since(end));
        }
        // The call came before the pre-warm: the plan it belonged to is spent.
        self.prewarm = None;
        self.busy += 1;
        self.take(usable, dead)
    }

    /// Hands out an idle environment, if there is one, to a call already counted busy
    /// (one that waited for an environment to free up).
    pub fn take(&mut self, usable: impl Fn(&E) -> bool, dead: &mut Vec<E>) -> Option<(E, bool)> {
        loop {
            let index = self
                .idle
                .iter()
                .rposition(|i| i.until.is_none())
                .or_else(|| self.idle.len().checked_sub(1))?;
            let Idle { env, until } = self.idle.remove(index);
            if usable(&env) {
                return Some((env, until.is_none()));
            }
            dead.push(env);
        }
    }

    /// A call ends (with or without an environment to return).
    pub fn finish(&mut self, now: Instant) {
        self.busy = self.busy.saturating_sub(1);
        if self.busy == 0 {
            self.last_end = Some(now);
        }
    }

    /// Returns an environment after its call (call [`Pool::finish`] first). Gives it back
    /// when the keep-alive plan says to release it now: the caller destroys it.
    pub fn put_idle(
        &mut self,
        env: E,
        provisioned: bool,
        policy: &KeepAlive,
        now: Instant,
    ) -> Option<E> {
        if provisioned {
            self.idle.push(Idle { env, until: None });
            return None;
        }
        let plan = policy.plan(&self.histogram);
        match plan.prewarm_after {
            // Other calls still run: the function is not idle, keep it for them.
            Some(after) if self.busy > 0 => {
                let until = now + after + plan.keep_for;
                self.idle.push(Idle {
                    env,
                    until: Some(until),
                });
                None
            }
            Some(after) => {
                self.prewarm = Some((now + after, plan.keep_for));
                Some(env)
            }
            None => {
                self.idle.push(Idle {
                    env,
                    until: Some(now + plan.keep_for),
                });
                None
            }
        }
    }

    /// Adds a provisioned environment once it is initialized.
    pub fn put_provisioned(&mut self, env: E) {
        self.idle.push(Idle { env, until: None });
    }

    /// Whether a pre-warm is due at `now`; if so, returns how long to keep the new
    /// environment and forgets the plan. Nothing is due while the function runs or still
    /// has an idle environment.
    pub fn prewarm_due(&mut self, now: Instant) -> Option<Duration> {
        let (at, keep_for) = self.prewarm?;
        if at > now {
            return None;
        }
        self.prewarm = None;
        (self.busy == 0 && self.idle.is_empty()).then_some(keep_for)
    }

    /// Adds a pre-warmed environment, kept for `keep_for` (from [`Pool::prewarm_due`]).
    pub fn put_prewarmed(&mut self, env: E, keep_for: Duration, now: Instant) {
        self.idle.push(Idle {
            env,
            until: Some(now + keep_for),
        });
    }

    /// Takes out the idle environments whose keep-alive has passed, and those for which
    /// `usable` is false.
    pub fn reclaim(&mut self, now: Instant, usable: impl Fn(&E) -> bool) -> Vec<E> {
        let (gone, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.idle)
            .into_iter()
            .partition(|i| i.until.is_some_and(|until| until <= now) || !usable(&i.env));
        self.idle = keep;
        gone.into_iter().map(|i| i.env).collect()
    }

    /// Takes out every idle environment, provisioned ones included.
    pub fn drain(&mut self) -> Vec<E> {
        self.prewarm = None;
        self.idle.drain(..).map(|i| i.env).collect()
    }

    /// Takes out up to `n` idle provisioned environments (when the configuration shrinks).
    pub fn drain_provisioned(&mut self, n: usize) -> Vec<E> {
        let mut taken = Vec::new();
        while taken.len() < n {
            let Some(index) = self.idle.iter().rposition(|i| i.until.is_none()) else {
                break;
            };
            taken.push(self.idle.remove(index).env);
        }
        taken
    }

    pub fn counts(&self) -> Counts {
        Counts {
            idle: self.idle.len() as u32,
            busy: self.busy,
            provisioned_idle: self.idle.iter().filter(|i| i.until.is_none()).count() as u32,
        }
    }

    /// The next moment this pool has something to do (an expiry or a pre-warm), for a
    /// simulator's event queue.
    pub fn next_deadline(&self) -> Option<Instant> {
        let expiry = self.idle.iter().filter_map(|i| i.until).min();
        let prewarm = self.prewarm.map(|(at, _)| at);
        match (expiry, prewarm) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keep_alive::Adaptive;

    const SEC: Duration = Duration::from_secs(1);

    fn fixed(secs: u64) -> KeepAlive {
        KeepAlive::Fixed {
            ttl: Duration::from_secs(secs),
        }
    }

    fn take(pool: &mut Pool<u32>, policy: &KeepAlive, now: Instant) -> Option<u32> {
        pool.acquire(policy, now, |_| true, &mut Vec::new())
            .map(|(e, _)| e)
    }

    #[test]
    fn the_most_recently_used_environment_is_reused_first() {
        let policy = fixed(600);
        let t0 = Instant::now();
        let mut pool = Pool {
            busy: 2,
            ..Pool::default()
        };
        pool.finish(t0);
        pool.put_idle(1, false, &policy, t0);
        pool.finish(t0 + SEC);
        pool.put_idle(2, false, &policy, t0 + SEC);
        assert_eq!(take(&mut pool, &policy, t0 + 2 * SEC), Some(2));
        assert_eq!(take(&mut pool, &policy, t0 + 2 * SEC), Some(1));
        assert_eq!(take(&mut pool, &policy, t0 + 2 * SEC), None);
        assert_eq!(pool.counts().busy, 3);
    }

    #[test]
    fn a_provisioned_environment_is_preferred_and_never_reclaimed() {
        let policy = fixed(1);
        let t0 = Instant::now();
        let mut pool = Pool::default();
        pool.put_provisioned(7);
        pool.busy = 1;
        pool.finish(t0);
        pool.put_idle(1, false, &policy, t0);
        let later = t0 + 3600 * SEC;
        assert_eq!(pool.reclaim(later, |_| true), vec![1]);
        assert_eq!(
            pool.acquire(&policy, later, |_| true, &mut Vec::new()),
            Some((7, true))
        );
    }

    #[test]
    fn an_environment_that_died_while_idle_is_never_handed_out() {
        let policy = fixed(600);
        let t0 = Instant::now();
        let mut pool = Pool::default();
        pool.put_provisioned(1);
        pool.put_provisioned(2);
        let mut dead = Vec::new();
        let got = pool.acquire(&policy, t0, |e| *e != 2, &mut dead);
        assert_eq!(got, Some((1, true)));
        assert_eq!(dead, vec![2]);
    }

    #[test]
    fn fixed_keep_alive_reclaims_exactly_at_the_ttl() {
        let policy = fixed(10);
        let t0 = Instant::now();
        let mut pool = Pool {
            busy: 1,
            ..Pool::default()
        };
        pool.finish(t0);
        assert_eq!(pool.put_idle(1, false, &policy, t0), None);
        assert!(pool.reclaim(t0 + 9 * SEC, |_| true).is_empty());
        assert_eq!(pool.next_deadline(), Some(t0 + 10 * SEC));
        assert_eq!(pool.reclaim(t0 + 10 * SEC, |_| true), vec![1]);
    }

    #[test]
    fn adaptive_releases_a_periodic_function_and_prewarms_before_its_next_call() {
        let policy = KeepAlive::Adaptive(Adaptive::with_bin(SEC));
        let mut pool: Pool<u32> = Pool::default();
        let mut now = Instant::now();
        let mut cold = 0;
        // A call every 30 s, lasting 100 ms; the environment handle is the call's number.
        for call in 0..40u32 {
            if let Some(keep) = pool.prewarm_due(now - 2 * SEC) {
                pool.put_prewarmed(1000 + call, keep, now - 2 * SEC);
            }
            pool.reclaim(now, |_| true);
            if take(&mut pool, &policy, now).is_none() {
                cold += 1;
            }
            let end = now + Duration::from_millis(100);
            pool.finish(end);
            let released = pool.put_idle(call, false, &policy, end);
            if call >= 10 {
                // Representative by now: released at once, pre-warm planned.
                assert_eq!(released, Some(call));
                let (at, _) = pool.prewarm.unwrap();
                // Idle times fall in bin 29: pre-warm at 29 s − 10%.
                assert_eq!(at, end + Duration::from_millis(26_100));
            }
            now += 30 * SEC;
        }
        // Cold while learning (the fixed 10 s fallback is shorter than the period), warm after.
        assert_eq!(cold, 11, "cold starts");
    }

    #[test]
    fn a_prewarm_is_cancelled_by_an_early_call() {
        let policy = fixed(600);
        let t0 = Instant::now();
        let mut pool: Pool<u32> = Pool {
            prewarm: Some((t0 + 10 * SEC, SEC)),
            ..Pool::default()
        };
        take(&mut pool, &policy, t0);
        pool.finish(t0 + SEC);
        assert_eq!(pool.prewarm_due(t0 + 20 * SEC), None);
    }
}
