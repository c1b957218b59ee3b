//! Change notices for containers, so that a caller can wait for a container to reach
//! a state (Docker's synchronous create, start, stop and `wait`) without polling.
//!
//! The lifecycle and the reconciler publish a [`ContainerNotice`] after every change
//! they make to a container's row and after deleting one. A notice is a hint, not the
//! record: waiters re-read the row when a notice names their container, and after a
//! lag (`RecvError::Lagged`) re-read it anyway.

use tokio::sync::broadcast;

use crate::db::models::ContainerRow;

/// How many notices a slow subscriber may fall behind before it lags.
const CAPACITY: usize = 1024;

/// A container's row changed or was deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerNotice {
    /// The container's uuid.
    pub id: String,
    /// Its Zun status after the change (the last one before a delete).
    pub status: String,
    /// The exit code of its last run, when it has exited.
    pub exit_code: Option<i64>,
    /// The row is gone.
    pub removed: bool,
}

impl ContainerNotice {
    /// The notice for a row as it is now.
    pub fn changed(row: &ContainerRow) -> ContainerNotice {
        ContainerNotice {
            id: row.id.clone(),
            status: row.status.clone(),
            exit_code: row.exit_code,
            removed: false,
        }
    }

    /// The notice for a row that was just deleted.
    pub fn removed(row: &ContainerRow) -> ContainerNotice {
        ContainerNotice {
            removed: true,
            ..ContainerNotice::changed(row)
        }
    }
}

/// Publishes container notices to every subscriber in this process.
#[derive(Clone)]
pub struct ContainerWatch {
    tx: broadcast::Sender<ContainerNotice>,
}

impl Default for ContainerWatch {
    fn default() -> Self {
        ContainerWatch::new()
    }
}

impl ContainerWatch {
    /// A watch nobody subscribes to yet.
    pub fn new() -> ContainerWatch {
        let (tx, _) = broadcast::channel(CAPACITY);
        ContainerWatch { tx }
    }

    /// Notices published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<ContainerNotice> {
        self.tx.subscribe()
    }

    /// Tells every subscriber; nobody listening is fine.
    pub fn publish(&self, notice: ContainerNotice) {
        let _ = self.tx.send(notice);
    }

    /// Publishes the row as it is now.
    pub fn changed(&self, row: &ContainerRow) {
        self.publish(ContainerNotice::changed(row));
    }

    /// Publishes that the row was deleted.
    pub fn removed(&self, row: &ContainerRow) {
        self.publish(ContainerNotice::removed(row));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn subscribers_get_changes_and_removals_with_the_exit_code() {
        let watch = ContainerWatch::new();
        let mut rx = watch.subscribe();
        let mut row = crate::db::instances::tests::container("c1", "p1", None);
        row.status = "Stopped".into();
        row.exit_code = Some(3);
        watch.changed(&row);
        watch.removed(&row);
        let changed = rx.recv().await.unwrap();
        assert_eq!(
            changed,
            ContainerNotice {
                id: "c1".into(),
                status: "Stopped".into(),
                exit_code: Some(3),
                removed: false,
            }
        );
        let removed = rx.recv().await.unwrap();
        assert!(removed.removed);
        assert_eq!(removed.exit_code, Some(3));
    }

    #[test]
    fn publishing_with_nobody_listening_is_fine() {
        let row = crate::db::instances::tests::container("c1", "p1", None);
        ContainerWatch::new().changed(&row);
    }
}
