// SPDX-License-Identifier: GPL-2.0

use fastsocket_logic::fifo::Fifo;
use std::collections::VecDeque;

/// Every sequence of up to 12 operations (push, pop, refused pop) on a queue of 3, against
/// `VecDeque`: same values out, in the same order, and the bound kept.
#[test]
fn matches_a_bounded_deque_exhaustively() {
    fn run(ops: &[u8]) {
        let mut f = Fifo::new(vec![None; 3]).unwrap();
        let mut model = VecDeque::new();
        for (i, &op) in ops.iter().enumerate() {
            let v = i as u32;
            match op {
                0 => {
                    let r = f.push(v);
                    if model.len() < 3 {
                        model.push_back(v);
                        assert_eq!(r, Ok(()));
                    } else {
                        assert_eq!(r, Err(v));
                    }
                }
                1 => assert_eq!(f.pop_if(Ok::<_, u32>), model.pop_front()),
                _ => {
                    // A refused take leaves the queue as it was.
                    assert_eq!(f.pop_if(|x| Err::<(), _>(x)), None);
                }
            }
            assert_eq!(f.len(), model.len());
        }
        while let Some(v) = model.pop_front() {
            assert_eq!(f.pop_if(Ok::<_, u32>), Some(v));
        }
        assert_eq!(f.pop_if(Ok::<_, u32>), None);
    }
    fn all(prefix: &mut Vec<u8>, left: usize) {
        run(prefix);
        if left == 0 {
            return;
        }
        for op in 0..3 {
            prefix.push(op);
            all(prefix, left - 1);
            prefix.pop();
        }
    }
    all(&mut Vec::new(), 12);
}

#[test]
fn needs_empty_slots() {
    assert!(Fifo::new(vec![None, Some(1u32)]).is_none());
    let mut none = Fifo::new(Vec::<Option<u32>>::new()).unwrap();
    assert_eq!(none.push(1), Err(1));
    assert_eq!(none.pop_if(Ok::<_, u32>), None);
}

#[test]
fn pop_if_sees_the_oldest_and_keeps_it_when_refused() {
    let mut f = Fifo::new(vec![None; 4]).unwrap();
    for v in [7, 8, 9] {
        f.push(v).unwrap();
    }
    assert_eq!(f.pop_if(|x| if x == 7 { Err(x) } else { Ok(x) }), None);
    assert_eq!(f.len(), 3);
    assert_eq!(f.pop_if(|x| Ok::<_, u32>(x * 10)), Some(70));
    assert_eq!(f.pop_if(Ok::<_, u32>), Some(8));
}
