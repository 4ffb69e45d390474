//! Can two `file_pattern`s match the same file name? Decided on DFAs.
//!
//! Each pattern `R` becomes an anchored DFA for `.*(?:R).*`, which accepts exactly
//! the names that `Regex::is_match` accepts. A breadth-first walk over pairs of
//! states finds the shortest name both accept. Patterns whose DFA is too large to
//! build, or whose product is too large to walk, are left undecided (no error).

use std::collections::{HashMap, VecDeque};

use regex_automata::dfa::{Automaton, StartKind, dense};
use regex_automata::util::primitives::StateID;
use regex_automata::util::start;
use regex_automata::{Anchored, MatchKind};

/// A pair of states, one per DFA.
type Pair = (StateID, StateID);
/// Each visited pair's parent pair and the byte that led from it.
type Parents = HashMap<Pair, Option<(Pair, u8)>>;

/// Upper bound on state pairs visited before giving up.
const MAX_PAIRS: usize = 200_000;
/// Upper bound on one DFA's size in bytes.
const MAX_DFA_BYTES: usize = 8 << 20;

/// A file name matched by both patterns, if one exists and the search is feasible.
pub fn common_match(a: &str, b: &str) -> Option<String> {
    let da = build(a)?;
    let db = build(b)?;
    let cfg = start::Config::new().anchored(Anchored::Yes);
    let sa = da.start_state(&cfg).ok()?;
    let sb = db.start_state(&cfg).ok()?;

    // Each visited pair remembers its parent and the byte that led to it.
    let mut parent = Parents::new();
    let mut queue = VecDeque::from([(sa, sb)]);
    parent.insert((sa, sb), None);
    while let Some(pair @ (x, y)) = queue.pop_front() {
        if da.is_dead_state(x) || db.is_dead_state(y) {
            continue;
        }
        if da.is_match_state(da.next_eoi_state(x)) && db.is_match_state(db.next_eoi_state(y)) {
            return Some(path_to(&parent, pair));
        }
        for byte in 0..=255u8 {
            let next = (da.next_state(x, byte), db.next_state(y, byte));
            if !parent.contains_key(&next) {
                if parent.len() >= MAX_PAIRS {
                    return None;
                }
                parent.insert(next, Some((pair, byte)));
                queue.push_back(next);
            }
        }
    }
    None
}

fn build(pattern: &str) -> Option<dense::DFA<Vec<u32>>> {
    dense::Builder::new()
        .configure(
            dense::Config::new()
                .match_kind(MatchKind::All)
                .start_kind(StartKind::Anchored)
                .dfa_size_limit(Some(MAX_DFA_BYTES))
                .determinize_size_limit(Some(MAX_DFA_BYTES)),
        )
        .build(&format!(r"(?s:.)*(?:{pattern})(?s:.)*"))
        .ok()
}

fn path_to(parent: &Parents, mut pair: Pair) -> String {
    let mut bytes = Vec::new();
    while let Some(Some((prev, byte))) = parent.get(&pair) {
        bytes.push(*byte);
        pair = *prev;
    }
    bytes.reverse();
    String::from_utf8_lossy(&bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::common_match;
    use regex::Regex;

    fn both_match(a: &str, b: &str, name: &str) -> bool {
        Regex::new(a).unwrap().is_match(name) && Regex::new(b).unwrap().is_match(name)
    }

    #[test]
    fn exclusive_prefixes_do_not_overlap() {
        let a = r"^citizens_(?P<period>\d{4}-\d{2})\.csv$";
        let b = r"^regions\.csv$";
        assert_eq!(common_match(a, b), None);
    }

    #[test]
    fn overlap_gives_a_name_both_patterns_match() {
        let a = r"^citizens_(?P<period>\d{4}-\d{2})\.(csv|xlsx)$";
        let b = r"^citizens_.*\.csv$";
        let name = common_match(a, b).expect("patterns overlap");
        assert!(both_match(a, b, &name), "witness {name:?} must match both");
    }

    #[test]
    fn unanchored_patterns_overlap_like_is_match() {
        // `orders` matches anywhere in the name, so `big_orders_x.csv` fits both.
        let a = r"orders";
        let b = r"^big_.*\.csv$";
        let name = common_match(a, b).expect("patterns overlap");
        assert!(both_match(a, b, &name), "witness {name:?} must match both");
    }

    #[test]
    fn different_extensions_do_not_overlap() {
        assert_eq!(common_match(r"^a_\d+\.csv$", r"^a_\d+\.jsonl$"), None);
    }
}
