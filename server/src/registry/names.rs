//! The live entries by name: hashed for the lookups of Acquire and Report, ordered for
//! List and watch snapshots, so that a page costs O(page size + log N) rather than a
//! sort of every name (docs/DESIGN.md §2).

use std::{
    collections::{BTreeMap, HashMap},
    ops::Bound,
    sync::Arc,
};

use super::entry::Entry;

/// Both indexes hold the same entries; only [`Names::insert`] and [`Names::remove`]
/// change them, so they cannot drift apart. The hashed one uses foldhash, seeded at
/// random per process: every Acquire and Report hashes a name, and std's SipHash was
/// most of the lookup's cost (`cargo bench -p cbd-breaker --bench decision`, the
/// README's numbers); a random seed keeps names chosen by clients from colliding on
/// purpose.
#[derive(Debug, Default)]
pub(crate) struct Names {
    hashed: HashMap<Arc<str>, Arc<Entry>, foldhash::fast::RandomState>,
    ordered: BTreeMap<Arc<str>, Arc<Entry>>,
}

impl Names {
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        Self {
            hashed: HashMap::with_capacity_and_hasher(capacity, Default::default()),
            ordered: BTreeMap::new(),
        }
    }

    pub(crate) fn get(&self, name: &str) -> Option<&Arc<Entry>> {
        self.hashed.get(name)
    }

    pub(crate) fn len(&self) -> usize {
        self.hashed.len()
    }

    pub(crate) fn insert(&mut self, name: Arc<str>, entry: Arc<Entry>) {
        self.ordered.insert(name.clone(), entry.clone());
        self.hashed.insert(name, entry);
    }

    pub(crate) fn remove(&mut self, name: &str) {
        self.hashed.remove(name);
        self.ordered.remove(name);
    }

    /// Every entry, in no particular order.
    pub(crate) fn entries(&self) -> impl Iterator<Item = &Arc<Entry>> {
        self.hashed.values()
    }

    /// The entries whose names start with `prefix` and sort after `after` (all of
    /// them when `after` is empty), in name order.
    pub(crate) fn starting_with<'a>(
        &'a self,
        prefix: &'a str,
        after: &'a str,
    ) -> impl Iterator<Item = (&'a Arc<str>, &'a Arc<Entry>)> + 'a {
        let start = if after >= prefix {
            Bound::Excluded(after)
        } else {
            Bound::Included(prefix)
        };
        self.ordered
            .range::<str, _>((start, Bound::Unbounded))
            .take_while(move |(name, _)| name.starts_with(prefix))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Names {
        let mut names = Names::default();
        let metrics = crate::metrics::Metrics::new(10);
        for name in list {
            let name: Arc<str> = (*name).into();
            let entry = Arc::new(Entry::new(
                name.clone(),
                cbd_breaker::Breaker::new(cbd_breaker::Spec::default()),
                None,
                metrics.breaker(&name),
            ));
            names.insert(name, entry);
        }
        names
    }

    fn listed(names: &Names, prefix: &str, after: &str) -> Vec<String> {
        names
            .starting_with(prefix, after)
            .map(|(name, _)| name.to_string())
            .collect()
    }

    #[test]
    fn a_prefix_range_is_in_name_order_and_stops_at_the_prefix_end() {
        let names = names(&["b/2", "a/1", "b/1", "b", "c/1", "b/10", "ba"]);
        assert_eq!(listed(&names, "b/", ""), ["b/1", "b/10", "b/2"]);
        assert_eq!(listed(&names, "b/", "b/1"), ["b/10", "b/2"]);
        // A token before the prefix starts at the prefix; one past it yields nothing.
        assert_eq!(listed(&names, "b/", "a"), ["b/1", "b/10", "b/2"]);
        assert_eq!(listed(&names, "b/", "b/3"), Vec::<String>::new());
        assert_eq!(listed(&names, "", "b/10"), ["b/2", "ba", "c/1"]);
        assert_eq!(listed(&names, "b", "").len(), 5);
    }

    #[test]
    fn removing_takes_a_name_out_of_both_indexes() {
        let mut names = names(&["a", "b", "c"]);
        names.remove("b");
        assert!(names.get("b").is_none());
        assert_eq!(names.len(), 2);
        assert_eq!(listed(&names, "", ""), ["a", "c"]);
        assert_eq!(names.entries().count(), 2);
    }
}
