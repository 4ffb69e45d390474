//! Can two `file_pattern`s match the same file name? Decided on DFAs.
//!
//! Each pattern `R` becomes an anchored DFA for `.*(?:R).*`, which accepts exactly
//! the names that `Regex::is_match` accepts. A breadth-first walk over pairs of
//! states finds the shortest name both accept. Patterns whose DFA is too large to
//! build, or whose product is too large to walk, are left undecided (no error).

use std::collections::VecDeque;

use regex_automata::dfa::{Automaton, StartKind, dense};
use regex_automata::util::primitives::StateID;
use regex_automata::util::start;
use regex_automata::{Anchored, MatchKind};

/// A pair of states, one per DFA.
type Pair = (StateID, StateID);
/// Each visited pair's parent pair and the byte that led from it.
type Parents = datafusion::common::HashMap<Pair, Option<(Pair, u8)>>;

/// Upper bound on state pairs visited before giving up.
const MAX_PAIRS: usize = 200_000;
/// Upper bound on one DFA's size in bytes.
const MAX_DFA_BYTES: usize = 8 << 20;

/// For each pair of `patterns` (by index, `i < j`) that two can match the
/// same file name: that name. Each pattern's DFA is built once (building it is
/// most of a pair's cost, and a config of n datasets has n(n-1)/2 pairs).
pub fn overlaps(patterns: &[&str]) -> Vec<(usize, usize, String)> {
    let dfas: Vec<Option<Dfa>> = patterns.iter().map(|p| build(p)).collect();
    let mut found = Vec::new();
    for (i, a) in dfas.iter().enumerate() {
        for (j, b) in dfas.iter().enumerate().skip(i + 1) {
            if let (Some(a), Some(b)) = (a, b)
                && let Some(name) = common_match_of(a, b)
            {
                found.push((i, j, name));
            }
        }
    }
    found
}

type Dfa = dense::DFA<Vec<u32>>;

/// A file name matched by both DFAs, if one exists and the search is feasible.
fn common_match_of(da: &Dfa, db: &Dfa) -> Option<String> {
    let cfg = start::Config::new().anchored(Anchored::Yes);
    let sa = da.start_state(&cfg).ok()?;
    let sb = db.start_state(&cfg).ok()?;

    // Each visited pair remembers its parent and the byte that led to it.
    let mut parent = Parents::default();
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

fn build(pattern: &str) -> Option<Dfa> {
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
    use regex::Regex;

    /// A file name matched by both patterns, if one exists and the search is feasible.
    fn common_match(a: &str, b: &str) -> Option<String> {
        super::common_match_of(&super::build(a)?, &super::build(b)?)
    }

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

    /// The pairs of a whole config are the pairs one by one.
    #[test]
    fn overlaps_are_the_common_matches_of_every_pair() {
        let patterns = [
            r"^citizens_(?P<period>\d{4}-\d{2})\.(csv|xlsx)$",
            r"^regions\.csv$",
            r"^citizens_.*\.csv$",
            r"orders",
            r"^big_.*\.csv$",
        ];
        let mut pairwise = Vec::new();
        for i in 0..patterns.len() {
            for j in i + 1..patterns.len() {
                if let Some(name) = common_match(patterns[i], patterns[j]) {
                    pairwise.push((i, j, name));
                }
            }
        }
        assert_eq!(pairwise.len(), 3, "{pairwise:?}");
        assert_eq!(super::overlaps(&patterns), pairwise);
    }

    #[test]
    fn different_extensions_do_not_overlap() {
        assert_eq!(common_match(r"^a_\d+\.csv$", r"^a_\d+\.jsonl$"), None);
    }
}
