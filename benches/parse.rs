//! Parser throughput per command shape.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use repcached::protocol::{text, Limits, Parsed};

fn parse_all(c: &mut Criterion) {
    let limits = Limits::default();
    let multiget = {
        let mut s = String::from("get");
        for i in 0..20 {
            s.push_str(&format!(" key:{i:012}"));
        }
        s.push_str("\r\n");
        s.into_bytes()
    };
    let set = {
        let mut s = b"set key:000000000042 0 0 100\r\n".to_vec();
        s.extend(std::iter::repeat_n(b'v', 100));
        s.extend_from_slice(b"\r\n");
        s
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("get", b"get key:000000000042\r\n".to_vec()),
        ("set_100b", set),
        ("multiget_20", multiget),
        ("mg_v_t_c", b"mg key:000000000042 v t c\r\n".to_vec()),
        ("incr", b"incr counter 1\r\n".to_vec()),
    ];
    let mut g = c.benchmark_group("parse");
    for (name, input) in &cases {
        g.throughput(Throughput::Bytes(input.len() as u64));
        g.bench_function(*name, |b| {
            b.iter(|| match text::parse(black_box(input), &limits) {
                Parsed::Done(r, n) => {
                    black_box(&r);
                    n
                }
                _ => unreachable!("benchmark inputs are complete requests"),
            })
        });
    }
    g.finish();
}

criterion_group!(benches, parse_all);
criterion_main!(benches);
