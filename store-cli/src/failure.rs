//! What can go wrong, as one line for people and an exit code for scripts.

use std::process::ExitCode;

use store_core::Error as StoreError;

/// A failed command. Its `Display` is the one line printed.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// The command line or its input is wrong (bad JSON, unreadable file).
    #[error("{0}")]
    BadInput(String),
    /// The store or the key does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A precondition (`--if-version`, `--if-absent`) did not hold.
    #[error("{0}")]
    Conflict(String),
    /// The store refused the write (invalid key, too large, refused by the server).
    #[error("{0}")]
    Refused(String),
    /// The API server could not be reached or did not answer in time.
    #[error("{0}")]
    Unreachable(String),
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

impl Failure {
    /// The exit code: 2 bad input, 3 not found, 4 conflict, 5 refused,
    /// 6 unreachable, 1 anything else (0 is success).
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(match self {
            Failure::Other(_) => 1,
            Failure::BadInput(_) => 2,
            Failure::NotFound(_) => 3,
            Failure::Conflict(_) => 4,
            Failure::Refused(_) => 5,
            Failure::Unreachable(_) => 6,
        })
    }
}

impl From<StoreError> for Failure {
    fn from(error: StoreError) -> Self {
        let line = error.to_string();
        match error {
            StoreError::Conflict { .. } => Failure::Conflict(line),
            StoreError::InvalidKey { .. }
            | StoreError::ValueTooLarge { .. }
            | StoreError::StoreFull { .. }
            | StoreError::Rejected { .. }
            | StoreError::Encode { .. }
            | StoreError::WritesFailed { .. }
            | StoreError::Unsupported { .. } => Failure::Refused(line),
            StoreError::Timeout { .. }
            | StoreError::Unavailable { .. }
            | StoreError::OutcomeUnknown { .. } => Failure::Unreachable(line),
            _ => Failure::Other(line),
        }
    }
}

impl From<kube::Error> for Failure {
    fn from(error: kube::Error) -> Self {
        match &error {
            kube::Error::Api(status) if status.code == 404 => {
                Failure::NotFound(status.message.clone())
            }
            kube::Error::Api(status) if status.code == 401 || status.code == 403 => {
                Failure::Other(format!("the API server refused: {}", status.message))
            }
            kube::Error::Api(_) => Failure::Other(error.to_string()),
            _ => Failure::Unreachable(format!("cannot reach the API server: {error}")),
        }
    }
}
