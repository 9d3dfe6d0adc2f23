//! Where a store's start-up stands: what `ready` waits on.

use crate::error::Error;

/// Where start-up stands.
#[derive(Debug, Clone)]
pub(crate) enum Readiness {
    Starting,
    Ready,
    Failed(Error),
}
