//! Waiting for a state instead of sleeping: poll a probe until it holds, and
//! fail naming what was awaited once a deadline has passed.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};

/// How often a probe is polled.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Polls `probe` until it yields a value and returns it; fails with
/// "timed out after `timeout` waiting for `what`" once `timeout` has passed
/// (the probe runs at least once, and once more at the deadline). An error
/// from the probe ends the wait at once.
pub fn wait_for<T>(
    timeout: Duration,
    what: &str,
    mut probe: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        let last_chance = Instant::now() >= deadline;
        if let Some(value) = probe()? {
            return Ok(value);
        }
        if last_chance {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(POLL_INTERVAL.min(deadline.saturating_duration_since(Instant::now())));
    }
}

/// Polls `cond` until it is true; fails like [`wait_for`].
pub fn eventually(
    timeout: Duration,
    what: &str,
    mut cond: impl FnMut() -> Result<bool>,
) -> Result<()> {
    wait_for(timeout, what, || Ok(cond()?.then_some(())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_the_first_value_the_probe_yields() {
        let mut calls = 0;
        let got = wait_for(Duration::from_secs(5), "the third call", || {
            calls += 1;
            Ok((calls == 3).then_some(calls))
        });
        assert_eq!(got.unwrap(), 3);
    }

    #[test]
    fn fails_naming_the_state_after_the_deadline() {
        let started = Instant::now();
        let err = eventually(
            Duration::from_millis(100),
            "a state that never comes",
            || Ok(false),
        )
        .unwrap_err();
        assert!(started.elapsed() >= Duration::from_millis(100));
        assert_eq!(
            err.to_string(),
            "timed out after 100ms waiting for a state that never comes"
        );
    }

    #[test]
    fn a_probe_error_ends_the_wait_at_once() {
        let started = Instant::now();
        let err = eventually(Duration::from_secs(30), "anything", || {
            anyhow::bail!("probe broke")
        })
        .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(err.to_string(), "probe broke");
    }
}
