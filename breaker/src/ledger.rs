//! Which plain permits of the current generation are still unreported, so that each
//! one counts at most once (docs/DESIGN.md §3.4, "Single-use permits").
//!
//! Permits carry consecutive serial numbers, so the outstanding ones are a sliding
//! bitmap: bit `serial - base` is set while that permit is unreported. Reported words
//! at the front are dropped as they empty, so a breaker whose calls all get reported
//! keeps one word, inline; a permit that is never reported pins the front until
//! [`MAX_SPAN`] newer permits push it out. Issuing and taking are a few bit
//! operations: no hashing, no allocation once the deque has grown to its working size.

use std::collections::VecDeque;

/// How many consecutive serials the ledger spans at most: a plain permit stays
/// reportable until this many newer permits of its breaker were issued (then it is
/// stale). 2^20 permits, 128 KiB of bitmap for the busiest breaker; an idle one keeps
/// nothing.
pub const MAX_SPAN: u64 = 1 << 20;

const WORD_BITS: u64 = 64;
const MAX_WORDS: usize = (MAX_SPAN / WORD_BITS) as usize;

/// The outstanding plain permits of one breaker's current generation.
///
/// The first word lives inline: calls that are reported before 64 newer ones are
/// issued never touch the heap, which keeps the hot path to the breaker's own cache
/// lines (with 10,000 breakers a separate allocation cost a cache miss per call).
#[derive(Clone, Debug, Default)]
pub(crate) struct Ledger {
    /// The serial of bit 0 of `first`; a multiple of 64.
    base: u64,
    /// Bit `i`: serial `base + i` is outstanding.
    first: u64,
    /// Bit `i` of `more[w]`: serial `base + 64 (w + 1) + i` is outstanding. Boxed
    /// so that an idle or quiet breaker carries 8 bytes for it, not 32.
    #[allow(clippy::box_collection)] // on purpose: 8 bytes in every breaker, not 32
    more: Option<Box<VecDeque<u64>>>,
}

impl Ledger {
    #[inline]
    fn more_len(&self) -> usize {
        self.more.as_ref().map_or(0, |m| m.len())
    }

    #[inline]
    fn is_empty(&self) -> bool {
        self.first == 0 && self.more_len() == 0
    }

    /// Drops the first word, moving the window on by 64 serials.
    fn advance(&mut self) {
        self.first = self.more.as_mut().and_then(|m| m.pop_front()).unwrap_or(0);
        self.base += WORD_BITS;
    }

    #[inline]
    fn word_mut(&mut self, index: usize) -> Option<&mut u64> {
        match index {
            0 => Some(&mut self.first),
            i => self.more.as_mut()?.get_mut(i - 1),
        }
    }

    /// Records `serial` as outstanding. Serials must be issued in increasing order.
    #[inline]
    pub fn issue(&mut self, serial: u64) {
        if self.is_empty() {
            self.base = serial - serial % WORD_BITS;
        }
        let mut index = ((serial - self.base) / WORD_BITS) as usize;
        // The oldest permits fall out once the span is full: they become stale.
        while index >= MAX_WORDS {
            self.advance();
            index -= 1;
        }
        if index > 0 {
            let more = self.more.get_or_insert_with(Box::default);
            while more.len() < index {
                more.push_back(0);
            }
        }
        let bit = 1 << ((serial - self.base) % WORD_BITS);
        *self.word_mut(index).expect("just made") |= bit;
    }

    /// Marks `serial` reported; `false` if it was not outstanding (reported already,
    /// pushed out, or never issued in this generation).
    #[inline]
    pub fn take(&mut self, serial: u64) -> bool {
        let Some(offset) = serial.checked_sub(self.base) else {
            return false;
        };
        let Ok(index) = usize::try_from(offset / WORD_BITS) else {
            return false;
        };
        let Some(word) = self.word_mut(index) else {
            return false;
        };
        let bit = 1 << (offset % WORD_BITS);
        if *word & bit == 0 {
            return false;
        }
        *word &= !bit;
        while self.first == 0 && self.more_len() > 0 {
            self.advance();
        }
        true
    }

    /// Forgets every outstanding permit (a new generation makes them all stale).
    pub fn clear(&mut self) {
        self.first = 0;
        self.more = None;
    }

    /// Outstanding permits.
    #[cfg(test)]
    fn outstanding(&self) -> u32 {
        self.first.count_ones()
            + self
                .more
                .iter()
                .flat_map(|m| m.iter())
                .map(|w| w.count_ones())
                .sum::<u32>()
    }

    /// Words held (inline and on the heap).
    #[cfg(test)]
    fn words(&self) -> usize {
        1 + self.more_len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_serial_is_taken_once() {
        let mut l = Ledger::default();
        for s in 1..=200 {
            l.issue(s);
        }
        assert!(l.take(7));
        assert!(!l.take(7), "a second report of the same permit");
        assert!(!l.take(0), "never issued");
        assert!(!l.take(201), "not issued yet");
        assert_eq!(l.outstanding(), 199);
    }

    #[test]
    fn reported_words_are_dropped_and_serials_below_stay_stale() {
        let mut l = Ledger::default();
        for s in 1..=1000 {
            l.issue(s);
            assert!(l.take(s));
        }
        assert_eq!(l.words(), 1, "kept {} words", l.words());
        for s in 1..=1000 {
            assert!(!l.take(s), "serial {s} again");
        }
        l.issue(1001);
        assert!(l.take(1001));
    }

    #[test]
    fn an_unreported_permit_is_pushed_out_after_max_span() {
        let mut l = Ledger::default();
        l.issue(1);
        for s in 2..=MAX_SPAN + 64 {
            l.issue(s);
            assert!(l.take(s));
        }
        assert!(l.words() <= MAX_WORDS);
        assert!(!l.take(1), "pushed out: stale");
        assert_eq!(l.outstanding(), 0);
    }

    #[test]
    fn permits_reported_out_of_order_across_words_count_once() {
        let mut l = Ledger::default();
        for s in 10..=330 {
            l.issue(s);
        }
        assert_eq!(l.words(), 6);
        // Every 7th first (spread over all words), then the rest newest first.
        let mut order: Vec<u64> = (10..=330).filter(|s| s % 7 == 0).collect();
        order.extend((10..=330).rev().filter(|s| s % 7 != 0));
        for (i, s) in order.iter().enumerate() {
            assert!(l.take(*s), "serial {s}");
            assert!(!l.take(*s), "serial {s} twice");
            assert_eq!(l.outstanding() as usize, order.len() - i - 1);
        }
        assert_eq!(l.words(), 1, "all reported: back to the inline word");
        l.issue(331);
        assert!(l.take(331));
    }

    #[test]
    fn clear_forgets_everything() {
        let mut l = Ledger::default();
        for s in 1..=100 {
            l.issue(s);
        }
        l.clear();
        assert!(!l.take(50));
        l.issue(101);
        assert!(l.take(101));
    }
}
