//! How many nodes a roll may restart at once: the plan's `batch:` or `migrate --batch`, as a
//! count (`3`) or a share of the cluster (`30%`). One node at a time unless told otherwise.

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Batch {
    /// One node at a time: the default, and the only size a rollback uses.
    #[default]
    One,
    /// Up to this many nodes (at least 1).
    Nodes(usize),
    /// Up to this share of the cluster's nodes, rounded down, and at least one (1–100).
    Percent(u8),
}

impl Batch {
    /// The most nodes restarted at once in a cluster of `nodes`: never all of them (that would
    /// be an outage, not a roll), always at least one.
    pub fn size(self, nodes: usize) -> usize {
        let asked = match self {
            Batch::One => 1,
            Batch::Nodes(k) => k,
            Batch::Percent(p) => nodes * usize::from(p) / 100,
        };
        asked.min(nodes.saturating_sub(1)).max(1)
    }
}

impl Batch {
    /// For the dry run and the question before a run: how the nodes group, or None one at a
    /// time. The groups are the largest the batch allows; before-stop gates may cut one short.
    pub fn groups_line(self, names: &[&str]) -> Option<String> {
        let size = self.size(names.len());
        if size <= 1 || names.len() <= 1 {
            return None;
        }
        const SHOWN: usize = 4;
        let groups: Vec<String> = names
            .chunks(size)
            .take(SHOWN)
            .map(|group| format!("[{}]", group.join(", ")))
            .collect();
        let count = names.len().div_ceil(size);
        let more = match count.saturating_sub(SHOWN) {
            0 => String::new(),
            left => format!(" … (+{left} more)"),
        };
        Some(format!(
            "batches of up to {size} nodes restarting at once ({count} batches): {}{more}; a before-stop gate can end a batch early, and going back is one node at a time",
            groups.join(", ")
        ))
    }
}

impl fmt::Display for Batch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Batch::One => write!(f, "1"),
            Batch::Nodes(k) => write!(f, "{k}"),
            Batch::Percent(p) => write!(f, "{p}%"),
        }
    }
}

/// Why a batch size was refused (the caller adds where it was written).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadBatch(pub String);

impl fmt::Display for BadBatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadBatch {}

pub const BATCH_HINT: &str = "write a number of nodes (e.g. 3) or a share of the cluster (e.g. 30%); 1 restarts one node at a time";

impl FromStr for Batch {
    type Err = BadBatch;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let bad = |why: &str| BadBatch(format!("batch \"{text}\" {why}"));
        if let Some(share) = text.strip_suffix('%') {
            return match share.trim().parse::<u8>() {
                Ok(p @ 1..=100) => Ok(Batch::Percent(p)),
                _ => Err(bad("is not a share of the cluster from 1% to 100%")),
            };
        }
        match text.parse::<usize>() {
            Ok(0) => Err(bad("is zero: at least one node restarts at a time")),
            Ok(1) => Ok(Batch::One),
            Ok(k) if k <= 10_000 => Ok(Batch::Nodes(k)),
            Ok(_) => Err(bad("is larger than any cluster (at most 10000)")),
            Err(_) => Err(bad("is not a number of nodes or a percentage")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_shares_parse_and_size() {
        assert_eq!("1".parse(), Ok(Batch::One));
        assert_eq!(" 3 ".parse(), Ok(Batch::Nodes(3)));
        assert_eq!("30%".parse(), Ok(Batch::Percent(30)));
        assert_eq!(Batch::Nodes(3).size(10), 3);
        assert_eq!(Batch::Percent(30).size(10), 3);
        assert_eq!(
            Batch::Percent(30).size(2),
            1,
            "a share rounds down, never to 0"
        );
        assert_eq!(Batch::Percent(100).size(7), 6, "never the whole cluster");
        assert_eq!(Batch::Nodes(5).size(3), 2);
        assert_eq!(Batch::Nodes(5).size(1), 1);
        assert_eq!(Batch::One.size(1000), 1);
        assert_eq!(Batch::Nodes(3).to_string(), "3");
        assert_eq!(Batch::Percent(25).to_string(), "25%");
    }

    #[test]
    fn the_groups_line_shows_the_first_batches() {
        assert_eq!(Batch::One.groups_line(&["a", "b"]), None);
        let line = Batch::Nodes(2).groups_line(&["a", "b", "c"]).unwrap();
        assert!(
            line.starts_with(
                "batches of up to 2 nodes restarting at once (2 batches): [a, b], [c];"
            ),
            "{line}"
        );
        let names: Vec<String> = (0..100).map(|n| format!("n{n}")).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let line = Batch::Percent(10).groups_line(&names).unwrap();
        assert!(
            line.contains("(10 batches)") && line.contains("… (+6 more)"),
            "{line}"
        );
    }

    #[test]
    fn nonsense_is_refused_with_the_value() {
        for bad in ["0", "0%", "101%", "-2", "three", "", "2.5", "99999"] {
            let err = bad.parse::<Batch>().unwrap_err();
            assert!(err.0.contains(&format!("\"{}\"", bad.trim())), "{err}");
        }
    }
}
