//! Per-bundle-per-cluster states and worst-state summaries.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The state of one bundle on one cluster. Spelled exactly as users see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum State {
    Ready,
    NotReady,
    WaitApplied,
    ErrApplied,
    OutOfSync,
    Modified,
    Pending,
    Offline,
}

impl State {
    pub const ALL: [State; 8] = [
        State::Ready,
        State::NotReady,
        State::WaitApplied,
        State::ErrApplied,
        State::OutOfSync,
        State::Modified,
        State::Pending,
        State::Offline,
    ];

    /// Higher is worse. ErrApplied > WaitApplied > Modified > OutOfSync > Pending >
    /// NotReady > Ready, as in the design; Offline sits just under ErrApplied because
    /// nothing is known about an offline cluster's workloads.
    pub fn severity(self) -> u8 {
        match self {
            State::Ready => 0,
            State::NotReady => 1,
            State::Pending => 2,
            State::OutOfSync => 3,
            State::Modified => 4,
            State::WaitApplied => 5,
            State::Offline => 6,
            State::ErrApplied => 7,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            State::Ready => "Ready",
            State::NotReady => "NotReady",
            State::WaitApplied => "WaitApplied",
            State::ErrApplied => "ErrApplied",
            State::OutOfSync => "OutOfSync",
            State::Modified => "Modified",
            State::Pending => "Pending",
            State::Offline => "Offline",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for State {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        State::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| format!("unknown state {s:?}"))
    }
}

/// Counts of states; the worst one wins.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub counts: BTreeMap<State, u64>,
}

impl Summary {
    pub fn add(&mut self, s: State) {
        *self.counts.entry(s).or_default() += 1;
    }

    pub fn total(&self) -> u64 {
        self.counts.values().sum()
    }

    pub fn ready(&self) -> u64 {
        self.counts.get(&State::Ready).copied().unwrap_or(0)
    }

    /// The worst state present, or `None` for an empty summary.
    pub fn worst(&self) -> Option<State> {
        self.counts
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(s, _)| *s)
            .max_by_key(|s| s.severity())
    }
}

impl FromIterator<State> for Summary {
    fn from_iter<I: IntoIterator<Item = State>>(iter: I) -> Self {
        let mut s = Summary::default();
        iter.into_iter().for_each(|st| s.add(st));
        s
    }
}

/// The state of one object of a bundle, as a spoke reports it for the objects that are
/// not Ready: the object's identity, its state and why. The hub stores and lists it as
/// it came (bounded at the gRPC edge).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceStatus {
    pub api_version: String,
    pub kind: String,
    /// Empty for cluster-scoped objects.
    #[serde(default)]
    pub namespace: String,
    pub name: String,
    pub state: State,
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_through_their_names() {
        for s in State::ALL {
            assert_eq!(s.to_string().parse::<State>(), Ok(s));
        }
        assert!("ready".parse::<State>().is_err());
    }

    #[test]
    fn worst_state_wins_in_the_designed_order() {
        use State::*;
        let order = [
            Ready,
            NotReady,
            Pending,
            OutOfSync,
            Modified,
            WaitApplied,
            ErrApplied,
        ];
        for pair in order.windows(2) {
            let s: Summary = [pair[0], pair[1]].into_iter().collect();
            assert_eq!(
                s.worst(),
                Some(pair[1]),
                "{:?} must beat {:?}",
                pair[1],
                pair[0]
            );
        }
        assert_eq!(Summary::default().worst(), None);
        let s: Summary = [Ready, Ready, NotReady].into_iter().collect();
        assert_eq!((s.ready(), s.total()), (2, 3));
    }
}
