//! The idempotency record every stub keeps: a key is applied once, and every
//! repeat of it gets the first answer back, errors included.

use std::collections::HashMap;

use tonic::{Code, Status};

/// The first answer given to a key: a response, or a refusal's code and message.
type Answer<T> = Result<T, (Code, String)>;

/// Answers by idempotency key. Lives inside a stub's state mutex, so checking
/// a key, applying the request and recording the answer are one atomic step.
#[derive(Debug)]
pub struct Replays<T> {
    answers: HashMap<String, Answer<T>>,
}

impl<T> Default for Replays<T> {
    fn default() -> Self {
        Self {
            answers: HashMap::new(),
        }
    }
}

impl<T: Clone> Replays<T> {
    /// The recorded answer to `key`, or `apply()`'s answer, recorded first.
    /// An empty key is refused: without it a retry could apply twice.
    pub fn once(&mut self, key: &str, apply: impl FnOnce() -> Result<T, Status>) -> Result<T, Status> {
        if key.is_empty() {
            return Err(Status::invalid_argument("idempotency_key is required"));
        }
        if let Some(answer) = self.answers.get(key) {
            return answer
                .clone()
                .map_err(|(code, message)| Status::new(code, message));
        }
        let answer = apply().map_err(|status| (status.code(), status.message().to_string()));
        self.answers.insert(key.to_string(), answer.clone());
        answer.map_err(|(code, message)| Status::new(code, message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_applied_once_and_repeats_its_first_answer() {
        let mut replays = Replays::default();
        let mut applied = 0;
        for _ in 0..3 {
            let answer = replays.once("k1", || {
                applied += 1;
                Ok(applied)
            });
            assert_eq!(answer.unwrap(), 1);
        }
        assert_eq!(applied, 1);
    }

    #[test]
    fn a_refusal_is_repeated_too() {
        let mut replays: Replays<u32> = Replays::default();
        let first = replays.once("k", || Err(Status::failed_precondition("declined")));
        let again = replays.once("k", || Ok(7));
        assert_eq!(first.unwrap_err().code(), Code::FailedPrecondition);
        let again = again.unwrap_err();
        assert_eq!(
            (again.code(), again.message()),
            (Code::FailedPrecondition, "declined")
        );
    }

    #[test]
    fn an_empty_key_is_refused() {
        let mut replays: Replays<u32> = Replays::default();
        let err = replays.once("", || Ok(1)).unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
    }
}
