//! Summaries of timed samples.

use std::time::Duration;

/// The median and minimum of some samples.
#[derive(Debug, Clone, Copy)]
pub struct Summary {
    /// The median, in seconds (mean of the middle two for an even count).
    pub median: f64,
    /// The fastest sample, in seconds.
    pub min: f64,
}

impl Summary {
    /// Summarizes non-empty `samples`.
    pub fn of(samples: &[Duration]) -> Self {
        let mut s: Vec<f64> = samples.iter().map(Duration::as_secs_f64).collect();
        s.sort_by(f64::total_cmp);
        let n = s.len();
        assert!(n > 0, "no samples");
        let median = if n % 2 == 1 {
            s[n / 2]
        } else {
            (s[n / 2 - 1] + s[n / 2]) / 2.0
        };
        Summary { median, min: s[0] }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        let ms = |v: &[u64]| {
            v.iter()
                .map(|&m| Duration::from_millis(m))
                .collect::<Vec<_>>()
        };
        let odd = Summary::of(&ms(&[30, 10, 20]));
        assert_eq!((odd.median, odd.min), (0.02, 0.01));
        let even = Summary::of(&ms(&[40, 10, 20, 30]));
        assert_eq!((even.median, even.min), (0.025, 0.01));
    }
}
