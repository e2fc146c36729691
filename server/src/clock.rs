//! The daemon's one clock read. The state machine never reads a clock; everything
//! that calls it passes the `now` taken here.

use cbd_breaker::Timestamp;

/// Wall-clock now. Wall time, not monotonic, because open deadlines are persisted
/// and must mean the same after a restart.
pub fn now() -> Timestamp {
    Timestamp::from_system_time(std::time::SystemTime::now())
}
