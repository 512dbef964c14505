//! Declarative link descriptions: `"20mbit 10ms"`, `"10mbit 40ms 0.5% loss"`,
//! `"50ms 5ms jitter"`, `"unlimited"`.
//!
//! Tests read better when a link is one short string than when it is a builder chain, and
//! the same strings can come from a benchmark's command line. The grammar is a list of
//! whitespace- (or comma-) separated items, each given at most once, in any order:
//!
//! - rate: `<n>bit`, `<n>kbit`, `<n>mbit`, `<n>gbit` (decimal, like `tc`). `mbps` is
//!   rejected as ambiguous (tc reads it as megabytes).
//! - one-way delay: `<n>us`, `<n>ms`, `<n>s`.
//! - jitter: a duration followed by the word `jitter`: the delay varies uniformly within
//!   ± that much (never below zero; frames are never reordered).
//! - loss: `<p>%` followed by the word `loss`: each frame is dropped with probability p,
//!   independently in each direction.
//! - `unlimited` (alone): no rate limit, no delay, no loss.
//!
//! Delay, jitter, loss and rate apply to *each direction* of the link, so `"50ms"` gives a
//! round-trip time of 100 ms across it.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// A link that does not parse, with the offending input and the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid link spec {input:?}: {reason}")]
pub struct SpecError {
    /// The whole input string.
    pub input: String,
    /// What is wrong with it.
    pub reason: String,
}

/// How a link behaves, per direction. See the module docs for the string form.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LinkSpec {
    rate_bps: Option<u64>,
    delay: Duration,
    jitter: Duration,
    loss: f64,
}

impl LinkSpec {
    /// No rate limit, delay or loss: the emulator just forwards frames.
    pub fn unlimited() -> LinkSpec {
        LinkSpec::default()
    }

    /// A link from its parts. `loss_percent` must be within 0..=100, `rate_bps` non-zero.
    pub fn new(
        rate_bps: Option<u64>,
        delay: Duration,
        jitter: Duration,
        loss_percent: f64,
    ) -> Result<LinkSpec, SpecError> {
        let spec = LinkSpec {
            rate_bps,
            delay,
            jitter,
            loss: loss_percent / 100.0,
        };
        if rate_bps == Some(0) {
            return Err(spec.error("rate must be above 0 bit/s"));
        }
        if !(0.0..=100.0).contains(&loss_percent) {
            return Err(spec.error(&format!("loss {loss_percent}% is outside 0..=100%")));
        }
        Ok(spec)
    }

    /// Bits per second, or `None` when unlimited.
    pub fn rate_bps(&self) -> Option<u64> {
        self.rate_bps
    }
    /// One-way delay.
    pub fn delay(&self) -> Duration {
        self.delay
    }
    /// Maximum deviation from `delay`, uniformly distributed.
    pub fn jitter(&self) -> Duration {
        self.jitter
    }
    /// Probability (0.0..=1.0) that a frame is dropped.
    pub fn loss(&self) -> f64 {
        self.loss
    }
    /// True when the link imposes nothing.
    pub fn is_unlimited(&self) -> bool {
        *self == LinkSpec::default()
    }

    fn error(&self, reason: &str) -> SpecError {
        SpecError {
            input: self.to_string(),
            reason: reason.to_string(),
        }
    }
}

impl fmt::Display for LinkSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_unlimited() {
            return f.write_str("unlimited");
        }
        let mut parts = Vec::new();
        if let Some(r) = self.rate_bps {
            parts.push(if r % 1_000_000_000 == 0 {
                format!("{}gbit", r / 1_000_000_000)
            } else if r % 1_000_000 == 0 {
                format!("{}mbit", r / 1_000_000)
            } else if r % 1000 == 0 {
                format!("{}kbit", r / 1000)
            } else {
                format!("{r}bit")
            });
        }
        if !self.delay.is_zero() {
            parts.push(fmt_duration(self.delay));
        }
        if !self.jitter.is_zero() {
            if self.delay.is_zero() {
                parts.push("0ms".into());
            }
            parts.push(format!("{} jitter", fmt_duration(self.jitter)));
        }
        if self.loss > 0.0 {
            parts.push(format!("{}% loss", self.loss * 100.0));
        }
        f.write_str(&parts.join(" "))
    }
}

fn fmt_duration(d: Duration) -> String {
    let us = d.as_micros();
    if us % 1000 == 0 {
        format!("{}ms", us / 1000)
    } else {
        format!("{us}us")
    }
}

impl FromStr for LinkSpec {
    type Err = SpecError;

    fn from_str(input: &str) -> Result<LinkSpec, SpecError> {
        let err = |reason: String| SpecError {
            input: input.to_string(),
            reason,
        };
        let tokens: Vec<&str> = input
            .split(|c: char| c.is_whitespace() || c == ',')
            .filter(|t| !t.is_empty())
            .collect();
        if tokens.is_empty() {
            return Err(err(
                "empty: write e.g. \"20mbit 10ms\" or \"unlimited\"".into()
            ));
        }
        if tokens.iter().any(|t| t.eq_ignore_ascii_case("unlimited")) {
            if tokens.len() > 1 {
                return Err(err(
                    "\"unlimited\" cannot be combined with other items".into()
                ));
            }
            return Ok(LinkSpec::unlimited());
        }
        let mut rate = None;
        let mut delay = None;
        let mut jitter = None;
        let mut loss = None;
        let mut i = 0;
        while i < tokens.len() {
            let tok = tokens[i];
            let next_is = |word: &str| {
                tokens
                    .get(i + 1)
                    .is_some_and(|t| t.eq_ignore_ascii_case(word))
            };
            if let Some(p) = tok.strip_suffix('%') {
                if !next_is("loss") {
                    return Err(err(format!("{tok:?} must be followed by \"loss\"")));
                }
                let p = parse_number(p).map_err(|e| err(format!("{tok:?}: {e}")))?;
                if p > 100.0 {
                    return Err(err(format!("loss {tok} is above 100%")));
                }
                set_once(&mut loss, p / 100.0, "loss").map_err(err)?;
                i += 2;
            } else if let Some(d) = parse_duration(tok).map_err(|e| err(format!("{tok:?}: {e}")))? {
                if next_is("jitter") {
                    set_once(&mut jitter, d, "jitter").map_err(err)?;
                    i += 2;
                } else {
                    set_once(&mut delay, d, "delay").map_err(err)?;
                    i += 1;
                }
            } else if let Some(r) = parse_rate(tok).map_err(|e| err(format!("{tok:?}: {e}")))? {
                set_once(&mut rate, r, "rate").map_err(err)?;
                i += 1;
            } else {
                return Err(err(format!(
                    "unknown item {tok:?}: expected a rate (10mbit), a delay (40ms), \
                     \"<d> jitter\", \"<p>% loss\" or \"unlimited\""
                )));
            }
        }
        Ok(LinkSpec {
            rate_bps: rate,
            delay: delay.unwrap_or_default(),
            jitter: jitter.unwrap_or_default(),
            loss: loss.unwrap_or_default(),
        })
    }
}

fn set_once<T>(slot: &mut Option<T>, value: T, what: &str) -> Result<(), String> {
    if slot.is_some() {
        return Err(format!("{what} given twice"));
    }
    *slot = Some(value);
    Ok(())
}

fn parse_number(s: &str) -> Result<f64, String> {
    // Only plain decimals: "1e3", "inf" and "nan" are not link parameters anyone means.
    if s.is_empty() || !s.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Err(format!("{s:?} is not a non-negative decimal number"));
    }
    s.parse::<f64>()
        .map_err(|_| format!("{s:?} is not a number"))
}

/// `Ok(None)` when the token does not end in a time unit.
fn parse_duration(tok: &str) -> Result<Option<Duration>, String> {
    let lower = tok.to_ascii_lowercase();
    let (num, scale_us) = if let Some(n) = lower.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = lower.strip_suffix("ms") {
        (n, 1e3)
    } else if let Some(n) = lower.strip_suffix('s') {
        if n.ends_with("bp") || n.ends_with("bit") {
            return Ok(None);
        }
        (n, 1e6)
    } else {
        return Ok(None);
    };
    let us = parse_number(num)? * scale_us;
    if us > 3_600e6 {
        return Err("durations above one hour are not link delays".into());
    }
    Ok(Some(Duration::from_micros(us.round() as u64)))
}

/// `Ok(None)` when the token does not end in a rate unit.
fn parse_rate(tok: &str) -> Result<Option<u64>, String> {
    let lower = tok.to_ascii_lowercase();
    for bad in ["kbps", "mbps", "gbps", "bps"] {
        if lower.ends_with(bad) {
            return Err("ambiguous unit: write kbit/mbit/gbit for bits per second".into());
        }
    }
    let (num, scale) = if let Some(n) = lower.strip_suffix("gbit") {
        (n, 1e9)
    } else if let Some(n) = lower.strip_suffix("mbit") {
        (n, 1e6)
    } else if let Some(n) = lower.strip_suffix("kbit") {
        (n, 1e3)
    } else if let Some(n) = lower.strip_suffix("bit") {
        (n, 1.0)
    } else {
        return Ok(None);
    };
    let bps = parse_number(num)? * scale;
    if bps < 1.0 {
        return Err("rate must be at least 1 bit/s".into());
    }
    if bps > 1e12 {
        return Err("rate above 1 Tbit/s: write \"unlimited\" for no limit".into());
    }
    Ok(Some(bps.round() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn parses_the_documented_forms() {
        let s: LinkSpec = "20mbit 10ms".parse().unwrap();
        assert_eq!(
            (s.rate_bps(), s.delay(), s.loss()),
            (Some(20_000_000), ms(10), 0.0)
        );
        let s: LinkSpec = "10mbit 40ms 0.5% loss".parse().unwrap();
        assert_eq!((s.rate_bps(), s.delay()), (Some(10_000_000), ms(40)));
        assert!((s.loss() - 0.005).abs() < 1e-12);
        let s: LinkSpec = "50ms 5ms jitter".parse().unwrap();
        assert_eq!((s.delay(), s.jitter(), s.rate_bps()), (ms(50), ms(5), None));
        assert!("unlimited".parse::<LinkSpec>().unwrap().is_unlimited());
        let s: LinkSpec = "0ms 30% loss".parse().unwrap();
        assert!((s.loss() - 0.3).abs() < 1e-12);
        let s: LinkSpec = "1.5gbit, 250us".parse().unwrap();
        assert_eq!(
            (s.rate_bps(), s.delay()),
            (Some(1_500_000_000), Duration::from_micros(250))
        );
        assert_eq!(
            "2s".parse::<LinkSpec>().unwrap().delay(),
            Duration::from_secs(2)
        );
        assert_eq!("100% loss".parse::<LinkSpec>().unwrap().loss(), 1.0);
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "20mbit 10ms",
            "10mbit 40ms 0.5% loss",
            "50ms 5ms jitter",
            "unlimited",
            "0ms",
            "300kbit",
            "30% loss",
        ] {
            let spec: LinkSpec = s.parse().unwrap();
            let again: LinkSpec = spec.to_string().parse().unwrap();
            assert_eq!(spec, again, "{s} -> {spec}");
        }
        assert_eq!(
            "10mbit 40ms 0.5% loss"
                .parse::<LinkSpec>()
                .unwrap()
                .to_string(),
            "10mbit 40ms 0.5% loss"
        );
    }

    #[test]
    fn rejects_bad_input_with_reasons() {
        for (input, needle) in [
            ("", "empty"),
            ("   ", "empty"),
            ("fast", "unknown item"),
            ("10mbps", "ambiguous"),
            ("10ms 20ms", "delay given twice"),
            ("5% 10ms", "followed by \"loss\""),
            ("101% loss", "above 100%"),
            ("-5ms", "non-negative"),
            ("nanms", "non-negative"),
            ("1e3ms", "non-negative"),
            ("0mbit", "at least 1 bit/s"),
            ("unlimited 10ms", "cannot be combined"),
            ("10mbit 20mbit", "rate given twice"),
            ("5ms jitter 6ms jitter", "jitter given twice"),
            ("10000s", "one hour"),
        ] {
            let e = input.parse::<LinkSpec>().unwrap_err();
            assert!(e.to_string().contains(needle), "{input:?}: {e}");
            assert_eq!(e.input, input);
        }
    }

    #[test]
    fn new_validates() {
        assert!(LinkSpec::new(Some(0), ms(1), ms(0), 0.0).is_err());
        assert!(LinkSpec::new(None, ms(1), ms(0), 100.5).is_err());
        assert!(LinkSpec::new(None, ms(1), ms(0), f64::NAN).is_err());
        assert_eq!(
            LinkSpec::new(Some(1000), ms(1), ms(0), 50.0)
                .unwrap()
                .loss(),
            0.5
        );
    }
}
