//! How the lab benchmarks round and summarise what they measured.

use std::time::Duration;

/// Milliseconds, one decimal.
pub fn ms(d: Duration) -> f64 {
    round(d.as_secs_f64() * 1e3, 1)
}

/// `v` rounded to `places` decimals.
pub fn round(v: f64, places: i32) -> f64 {
    let f = 10f64.powi(places);
    (v * f).round() / f
}

/// The median of `v` (the mean of the middle two for an even count); None when empty.
pub fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 })
}
