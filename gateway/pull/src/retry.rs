//! Bounded retries: a few attempts with exponential backoff and full jitter, only for errors
//! that may go away (the registry unreachable, 5xx, 429).

use std::future::Future;
use std::time::Duration;

use crate::error::PullError;

/// How often and how long to try.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts in all (at least 1).
    pub attempts: u32,
    /// Backoff before the second attempt; doubled for each further one.
    pub base: Duration,
    /// Cap on one backoff.
    pub max: Duration,
}

impl Default for RetryPolicy {
    /// 3 attempts, 0.5 s then 1 s (each jittered to 50-100 %), so one pull against a dead
    /// registry gives up within a few seconds plus the attempts' own timeouts.
    fn default() -> Self {
        RetryPolicy {
            attempts: 3,
            base: Duration::from_millis(500),
            max: Duration::from_secs(4),
        }
    }
}

impl RetryPolicy {
    /// The wait before attempt `n` (1-based; `n >= 2`).
    pub fn backoff(&self, n: u32) -> Duration {
        let exp = self
            .base
            .saturating_mul(1u32 << n.saturating_sub(2).min(16))
            .min(self.max);
        // Jitter to 50-100 % so gateways do not retry in lockstep.
        exp.mul_f64(0.5 + fastrand::f64() * 0.5)
    }

    /// Runs `op` until it succeeds, fails for good, or the attempts run out.
    pub async fn run<T, F, Fut>(&self, what: &str, mut op: F) -> Result<T, PullError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, PullError>>,
    {
        let attempts = self.attempts.max(1);
        let mut n = 1;
        loop {
            match op().await {
                Ok(v) => return Ok(v),
                Err(e) if e.is_transient() && n < attempts => {
                    let wait = self.backoff(n + 1);
                    tracing::warn!(source = %what, attempt = n, error = %e, retry_in = ?wait, "wasm module fetch failed; retrying");
                    tokio::time::sleep(wait).await;
                    n += 1;
                }
                Err(e) if n > 1 => {
                    return Err(PullError::Exhausted {
                        attempts: n,
                        last: Box::new(e),
                    })
                }
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_jittered_and_capped() {
        let p = RetryPolicy::default();
        for _ in 0..50 {
            let b2 = p.backoff(2);
            assert!(b2 >= Duration::from_millis(250) && b2 <= Duration::from_millis(500));
            let b3 = p.backoff(3);
            assert!(b3 >= Duration::from_millis(500) && b3 <= Duration::from_secs(1));
            assert!(p.backoff(30) <= Duration::from_secs(4));
        }
    }

    #[test]
    fn retries_only_transient_errors() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        let p = RetryPolicy {
            attempts: 3,
            base: Duration::from_millis(1),
            max: Duration::from_millis(2),
        };
        let mut calls = 0;
        let r: Result<(), _> = rt.block_on(p.run("x", || {
            calls += 1;
            async {
                Err(PullError::Registry {
                    url: "u".into(),
                    message: "down".into(),
                    transient: true,
                })
            }
        }));
        assert_eq!(calls, 3);
        assert!(matches!(r, Err(PullError::Exhausted { attempts: 3, .. })));
        let mut calls = 0;
        let r: Result<(), _> = rt.block_on(p.run("x", || {
            calls += 1;
            async { Err(PullError::NotWasm { what: "w".into() }) }
        }));
        assert_eq!(calls, 1);
        assert!(matches!(r, Err(PullError::NotWasm { .. })));
    }
}
