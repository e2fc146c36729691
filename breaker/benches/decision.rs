//! The cost of one decision: an `acquire` and the `report` of its outcome.
//!
//! `cargo bench -p cbd-breaker --bench decision -- --warm-up-time 1 --measurement-time 3`

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use cbd_breaker::{Breaker, Outcome, Spec, Timestamp, WindowSpec};
use criterion::{Criterion, criterion_group, criterion_main};

const BREAKERS: usize = 10_000;
const T0: u64 = 1_700_000_000_000_000_000;

/// One acquire + report pair at `now`; the outcome alternates so the window works.
fn pair(b: &mut Breaker, now: u64) {
    let now = Timestamp::from_unix_nanos(now);
    let a = b.acquire(now);
    if let Some(permit) = a.permit {
        let outcome = if now.unix_nanos().is_multiple_of(8_000) {
            Outcome::Failure
        } else {
            Outcome::Success
        };
        black_box(
            b.report(permit, outcome, Some(Duration::from_millis(3)), now)
                .ok(),
        );
    }
}

fn names() -> Vec<Box<str>> {
    (0..BREAKERS)
        .map(|i| format!("payments.api/charge-{i:05}").into())
        .collect()
}

fn single(c: &mut Criterion) {
    let mut b = Breaker::new(Spec::default());
    let mut now = T0;
    c.bench_function("pair/one_breaker", |bench| {
        bench.iter(|| {
            now += 1_000;
            pair(&mut b, now);
        })
    });

    let mut b = Breaker::new(Spec {
        failure_rate_percent: Some(50),
        window: WindowSpec::Time {
            duration: Duration::from_secs(60),
            buckets: 60,
        },
        ..Spec::default()
    });
    c.bench_function("pair/one_breaker_time_window", |bench| {
        bench.iter(|| {
            now += 1_000;
            pair(&mut b, now);
        })
    });
    // Reports that name one of 8 callers: the cost of attribution (docs/DESIGN.md §3.7).
    let callers: Vec<String> = (0..8).map(|i| format!("svc-{i}")).collect();
    let mut b = Breaker::new(Spec {
        min_distinct_callers: 2,
        ..Spec::default()
    });
    c.bench_function("pair/one_breaker_named_callers", |bench| {
        bench.iter(|| {
            now += 1_000;
            let at = Timestamp::from_unix_nanos(now);
            let caller = &callers[(now / 1_000 % 8) as usize];
            if let Some(permit) = b.acquire(at).permit {
                let outcome = if now.is_multiple_of(8_000) {
                    Outcome::Failure
                } else {
                    Outcome::Success
                };
                black_box(b.report_as(permit, outcome, None, Some(caller), at).ok());
            }
        })
    });
}

/// Pairs over 10,000 named breakers, each found by its name first: with the hasher
/// the daemon's registry uses (foldhash, `server/src/registry/names.rs`), and with
/// std's SipHash for comparison.
fn many(c: &mut Criterion) {
    fn run<S: std::hash::BuildHasher + Default>(c: &mut Criterion, id: &str) {
        let names = names();
        let mut map: HashMap<Box<str>, Breaker, S> = names
            .iter()
            .map(|n| (n.clone(), Breaker::new(Spec::default())))
            .collect();
        let mut i = 0;
        let mut now = T0;
        c.bench_function(id, |bench| {
            bench.iter(|| {
                i = (i + 1) % BREAKERS;
                now += 1_000;
                let b = map.get_mut(black_box(&*names[i])).unwrap();
                pair(b, now);
            })
        });
    }
    run::<foldhash::fast::RandomState>(c, "pair/10k_breakers_with_lookup");
    run::<std::hash::RandomState>(c, "pair/10k_breakers_with_siphash_lookup");
}

/// Two threads, each doing pairs on the shared map's breakers (one `Mutex` each),
/// round-robin from opposite ends. The time is per pair per thread.
fn two_threads(c: &mut Criterion) {
    let names = names();
    let map: Arc<HashMap<Box<str>, Mutex<Breaker>>> = Arc::new(
        names
            .iter()
            .map(|n| (n.clone(), Mutex::new(Breaker::new(Spec::default()))))
            .collect(),
    );
    c.bench_function("pair/10k_breakers_2_threads_mutex", |bench| {
        bench.iter_custom(|iters| {
            let barrier = Barrier::new(2);
            std::thread::scope(|s| {
                let handles: Vec<_> = (0..2)
                    .map(|t| {
                        let (map, names, barrier) = (&map, &names, &barrier);
                        s.spawn(move || {
                            barrier.wait();
                            let start = Instant::now();
                            let mut i = t * BREAKERS / 2;
                            for n in 0..iters {
                                i = (i + 1) % BREAKERS;
                                let mut b = map[black_box(&*names[i])].lock().unwrap();
                                pair(&mut b, T0 + n * 1_000);
                            }
                            start.elapsed()
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().unwrap())
                    .max()
                    .unwrap()
            })
        })
    });
}

criterion_group!(benches, single, many, two_threads);
criterion_main!(benches);
