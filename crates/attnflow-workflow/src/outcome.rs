//! What an attempt of a state's action ends in: the key of a transition.

/// The outcome of one attempt of a state's action; the key of a transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// The action succeeded.
    Ok,
    /// The action failed; worth retrying under the state's retry policy.
    Failed,
    /// The action found its input invalid; retrying cannot help, so it is
    /// never retried (external commands signal it with exit code 65,
    /// `EX_DATAERR`).
    Invalid,
    /// The action ran past the state's timeout and was killed.
    Timeout,
    /// The state was entered more often than its `max_visits` allows; the
    /// action did not run.
    Exhausted,
}

impl Outcome {
    /// Every outcome, in the order diagrams and tables list them.
    pub const ALL: [Outcome; 5] = [
        Outcome::Ok,
        Outcome::Invalid,
        Outcome::Failed,
        Outcome::Timeout,
        Outcome::Exhausted,
    ];

    /// The lowercase name used in specs, the store and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Failed => "failed",
            Outcome::Invalid => "invalid",
            Outcome::Timeout => "timeout",
            Outcome::Exhausted => "exhausted",
        }
    }

    /// Parses the lowercase name; `None` for anything else.
    pub fn parse(name: &str) -> Option<Outcome> {
        Outcome::ALL
            .into_iter()
            .find(|outcome| outcome.as_str() == name)
    }

    /// Whether another attempt of the same action may help.
    pub fn is_retryable(self) -> bool {
        matches!(self, Outcome::Failed | Outcome::Timeout)
    }
}
