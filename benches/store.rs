//! Store get/set, alone and with several threads on the same store.

use std::sync::Arc;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use repcached::store::{Clock, ReadOptions, SetMode, SetRequest, Store, StoreConfig};

const KEYS: usize = 100_000;

fn key(i: usize) -> Vec<u8> {
    format!("key:{i:012}").into_bytes()
}

fn filled() -> Store {
    let s = Store::new(StoreConfig::default(), Arc::new(Clock::new()));
    let v = [b'v'; 100];
    for i in 0..KEYS {
        s.set(&SetRequest::new(SetMode::Set, &key(i), &v), 2)
            .unwrap();
    }
    s
}

fn store_ops(c: &mut Criterion) {
    let s = filled();
    let keys: Vec<Vec<u8>> = (0..KEYS).map(key).collect();
    let v = [b'v'; 100];
    let mut i = 0usize;
    c.bench_function("store/get_hit", |b| {
        b.iter(|| {
            i = (i + 7919) % KEYS;
            s.read(&keys[i], 2, ReadOptions::default(), |r| {
                black_box(r.map(|h| h.item.value().len()).ok())
            })
        })
    });
    c.bench_function("store/set_100b", |b| {
        b.iter(|| {
            i = (i + 7919) % KEYS;
            s.set(&SetRequest::new(SetMode::Set, &keys[i], &v), 2)
                .unwrap()
        })
    });
    // Two background threads hammer the store while the measured thread works.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut bg = Vec::new();
    for t in 0..2 {
        let (s, stop, keys) = (s.clone(), stop.clone(), keys.clone());
        bg.push(std::thread::spawn(move || {
            let mut j = t * 1000;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                j = (j + 104_729) % KEYS;
                if j % 10 == 0 {
                    s.set(&SetRequest::new(SetMode::Set, &keys[j], &[b'w'; 100]), 2)
                        .unwrap();
                } else {
                    s.read(&keys[j], 2, ReadOptions::default(), |r| {
                        black_box(r.is_ok())
                    });
                }
            }
        }));
    }
    c.bench_function("store/get_hit_contended", |b| {
        b.iter(|| {
            i = (i + 7919) % KEYS;
            s.read(&keys[i], 2, ReadOptions::default(), |r| {
                black_box(r.is_ok())
            })
        })
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for h in bg {
        let _ = h.join();
    }
}

criterion_group!(benches, store_ops);
criterion_main!(benches);
