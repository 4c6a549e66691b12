// SPDX-License-Identifier: GPL-2.0

use fastsocket_logic::rfd::{cpu_of, steer, walk, Ephemeral, Walk, WALK_MAX};
use std::collections::BTreeSet;

/// The ports of a walk in the order the kernel's loop (`__inet_hash_connect()`) tries them.
fn ports(w: Walk) -> impl Iterator<Item = u32> {
    let mut port = w.port;
    (0..w.span / w.step).map(move |_| {
        if port >= w.end {
            port -= w.span;
        }
        let p = port;
        port += w.step;
        p
    })
}

/// Every walk of a search, concatenated, as the kernel tries them.
fn walked(cpu: u32, n: u32, low: u32, high: u32, offset: u32) -> Vec<Vec<u32>> {
    (0..)
        .map_while(|pass| walk(pass, cpu, n, low, high, offset))
        .map(|w| ports(w).collect())
        .collect()
}

/// What the patch's fastsocket_port_walk_valid() accepts: every port tried lies in
/// [low, high).
fn kernel_accepts(w: Walk, low: u32, high: u32) -> bool {
    let n = w.span / w.step;
    let wrap = (w.end - w.port).div_ceil(w.step);
    w.step > 0
        && w.span > 0
        && w.span % w.step == 0
        && w.port >= low
        && w.port < w.end
        && w.end <= high
        && (wrap >= n || w.port + wrap * w.step - w.span >= low)
}

#[test]
fn walks_cover_exactly_the_cpus_ports_once_parity_first() {
    for n in 1..=5u32 {
        for low in 1..=12u32 {
            for len in 1..=3 * 2 * n + 3 {
                let high = low + len;
                for offset in 0..len {
                    let mut all = BTreeSet::new();
                    for cpu in 0..n {
                        let passes = walked(cpu, n, low, high, offset);
                        // Each parity's ports in one walk, or two when its window wraps.
                        assert!(passes.len() <= 4);
                        let mut seen = BTreeSet::new();
                        for (i, ports) in passes.iter().enumerate() {
                            let w = walk(i as u32, cpu, n, low, high, offset).unwrap();
                            assert!(kernel_accepts(w, low, high), "{w:?} in [{low},{high})");
                            // One parity per walk, the stock search's first parity first.
                            let parity = (ports[0] - low) & 1;
                            assert!(ports.iter().all(|p| (p - low) & 1 == parity));
                            let owns_first = (low..high)
                                .any(|p| cpu_of(p as u16, n) == cpu && (p - low) & 1 == offset & 1);
                            if i == 0 && owns_first {
                                assert_eq!(parity, offset & 1);
                            }
                            for &p in ports {
                                assert!(seen.insert(p), "port {p} tried twice");
                            }
                        }
                        let want: BTreeSet<u32> = (low..high)
                            .filter(|&p| cpu_of(p as u16, n) == cpu)
                            .collect();
                        assert_eq!(seen, want, "cpu {cpu} of {n}, [{low},{high}) at {offset}");
                        all.extend(seen);
                    }
                    assert_eq!(all, (low..high).collect(), "every port has an owner");
                }
            }
        }
    }
}

#[test]
fn walks_are_bounded_and_start_where_the_offset_points() {
    // Default range, 2 and 3 CPUs: each pass tries at most WALK_MAX distinct ports of its CPU
    // and parity, inside the range, from a start the offset picks.
    for n in [2u32, 3] {
        for cpu in 0..n {
            let mut starts = BTreeSet::new();
            for offset in (0..28232).step_by(97) {
                // WALK_MAX ports of each parity, in one or two walks that never wrap.
                let mut per_parity = [0usize; 2];
                let mut pass = 0;
                while let Some(w) = walk(pass, cpu, n, 32768, 61000, offset) {
                    assert!(kernel_accepts(w, 32768, 61000));
                    let ports: Vec<u32> = ports(w).collect();
                    assert!(ports.windows(2).all(|p| p[0] < p[1]), "no wrap-around");
                    assert!(ports.iter().all(|&p| cpu_of(p as u16, n) == cpu));
                    assert!(ports.iter().all(|&p| p & 1 == ports[0] & 1));
                    per_parity[(ports[0] & 1) as usize] += ports.len();
                    if pass == 0 {
                        starts.insert(w.port);
                    }
                    pass += 1;
                }
                assert!(pass <= 4);
                assert_eq!(per_parity, [WALK_MAX as usize; 2]);
            }
            assert!(starts.len() > 250, "{} starts", starts.len());
        }
    }
    // An offset near the end of the range: the window wraps to the class's first ports.
    let w = walk(0, 0, 2, 32768, 61000, 28231).unwrap();
    assert_eq!(ports(w).last(), Some(60997));
    let w = walk(1, 0, 2, 32768, 61000, 28231).unwrap();
    assert_eq!(w.port, 32769);
}

#[test]
fn no_walk_for_bad_input() {
    assert_eq!(walk(0, 2, 2, 100, 200, 0), None);
    assert_eq!(walk(0, 0, 1, 200, 200, 0), None);
    assert_eq!(walk(0, 0, 1, 1, 65537, 0), None);
    assert_eq!(walk(0, 0, 0, 1, 2, 0), None);
    // The largest range and CPU count.
    let owned = (1..65536u32)
        .filter(|&p| cpu_of(p as u16, 8192) == 8191)
        .count();
    let walks = walked(8191, 8192, 1, 65536, 65534);
    assert_eq!(walks.iter().map(Vec::len).sum::<usize>(), owned);
    for pass in 0..walks.len() as u32 {
        let w = walk(pass, 8191, 8192, 1, 65536, 65534).unwrap();
        assert!(kernel_accepts(w, 1, 65536));
        assert!(ports(w).all(|p| cpu_of(p as u16, 8192) == 8191));
    }
}

#[test]
fn cpu_of_pairs_ports() {
    assert_eq!(cpu_of(32768, 2), 0);
    assert_eq!(cpu_of(32769, 2), 0);
    assert_eq!(cpu_of(32770, 2), 1);
    assert_eq!(cpu_of(65535, 3), 32767 % 3);
    assert_eq!(cpu_of(7, 0), 0);
    for n in 1..=64 {
        for p in 0..=u16::MAX {
            assert!(cpu_of(p, n) < n);
        }
    }
}

#[test]
fn steers_replies_of_active_connections_only() {
    let r = Ephemeral {
        low: 32768,
        high: 60999,
    };
    let never = |_| false;
    // A reply from a service to a port this host picked.
    assert_eq!(steer(80, 40001, r, 2, never), Some(cpu_of(40001, 2)));
    assert_eq!(steer(8080, 60999, r, 3, never), Some(cpu_of(60999, 3)));
    // Segments for a listener outside the range, and the range's edges.
    assert_eq!(steer(40001, 80, r, 2, never), None);
    assert_eq!(steer(80, 32767, r, 2, never), None);
    assert_eq!(steer(80, 61000, r, 2, never), None);
    // A peer port inside the range: a listener here on an ephemeral port.
    assert_eq!(steer(40001, 40002, r, 2, never), None);
    // A reserved port is never steered; the reservation is asked only when it matters.
    assert_eq!(steer(80, 40001, r, 2, |p| p == 40001), None);
    assert_eq!(
        steer(80, 80, r, 2, |_| panic!("asked for a port out of range")),
        None
    );
}
