//! What the machine's test files share: a realistic clock and the base spec.

use std::time::Duration;

use cbd_breaker::{Spec, Timestamp};

pub const S: Duration = Duration::from_secs(1);

/// `ms` milliseconds after an arbitrary, realistic epoch.
pub fn at(ms: u64) -> Timestamp {
    Timestamp::from_unix_nanos(1_700_000_000_000_000_000 + ms * 1_000_000)
}

/// 3 consecutive failures trip; open 10 s; then `change`; validated.
pub fn spec(change: impl FnOnce(&mut Spec)) -> Spec {
    let mut s = Spec {
        consecutive_failures: Some(3),
        open_duration: 10 * S,
        ..Spec::default()
    };
    change(&mut s);
    s.validate().unwrap();
    s
}
