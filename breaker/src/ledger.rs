//! Which plain permits of the current generation are still unreported, so that each
//! one counts at most once (docs/DESIGN.md §3.4, "Single-use permits").
//!
//! Permits carry consecutive serial numbers, so the outstanding ones are a sliding
//! bitmap: bit `serial - base` is set while that permit is unreported. Reported words
//! at the front are dropped as they empty, so a breaker whose calls all get reported
//! keeps one or two words; a permit that is never reported pins the front until
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
#[derive(Clone, Debug, Default)]
pub(crate) struct Ledger {
    /// The serial of bit 0 of `words[0]`; a multiple of 64.
    base: u64,
    /// Bit `i` of `words[w]`: serial `base + 64 w + i` is outstanding.
    words: VecDeque<u64>,
}

impl Ledger {
    /// Records `serial` as outstanding. Serials must be issued in increasing order.
    pub fn issue(&mut self, serial: u64) {
        if self.words.is_empty() {
            self.base = serial - serial % WORD_BITS;
        }
        let word = ((serial - self.base) / WORD_BITS) as usize;
        while self.words.len() <= word {
            self.words.push_back(0);
        }
        // The oldest permits fall out once the span is full: they become stale.
        while self.words.len() > MAX_WORDS {
            self.words.pop_front();
            self.base += WORD_BITS;
        }
        let word = ((serial - self.base) / WORD_BITS) as usize;
        self.words[word] |= 1 << ((serial - self.base) % WORD_BITS);
    }

    /// Marks `serial` reported; `false` if it was not outstanding (reported already,
    /// pushed out, or never issued in this generation).
    pub fn take(&mut self, serial: u64) -> bool {
        let Some(offset) = serial.checked_sub(self.base) else {
            return false;
        };
        let Some(word) = self.words.get_mut((offset / WORD_BITS) as usize) else {
            return false;
        };
        let bit = 1 << (offset % WORD_BITS);
        if *word & bit == 0 {
            return false;
        }
        *word &= !bit;
        while self.words.front() == Some(&0) {
            self.words.pop_front();
            self.base += WORD_BITS;
        }
        true
    }

    /// Forgets every outstanding permit (a new generation makes them all stale).
    pub fn clear(&mut self) {
        self.words.clear();
        if self.words.capacity() > 4 {
            self.words.shrink_to(4);
        }
    }

    /// Outstanding permits.
    #[cfg(test)]
    fn outstanding(&self) -> u32 {
        self.words.iter().map(|w| w.count_ones()).sum()
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
        assert!(l.words.len() <= 1, "kept {} words", l.words.len());
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
        assert!(l.words.len() <= MAX_WORDS);
        assert!(!l.take(1), "pushed out: stale");
        assert_eq!(l.outstanding(), 0);
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
