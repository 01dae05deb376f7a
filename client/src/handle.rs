//! Evaluation of one migration through a handle resolved once: the application's hot path.

use crate::slot::Slot;
use std::sync::Arc;
use switchyard_domain::{Plan, Stage};

/// One migration, resolved once: evaluation is a few atomic loads and, when the front splits
/// the entities, one hash.
#[derive(Clone)]
pub struct MigrationHandle {
    pub(crate) slot: Arc<Slot>,
}

impl MigrationHandle {
    pub fn key(&self) -> &str {
        &self.slot.key
    }

    #[inline]
    pub fn stage(&self, entity_key: impl AsRef<[u8]>) -> Stage {
        self.slot.stage_of(entity_key.as_ref())
    }

    /// The stage of an integer entity (bucketed by its decimal text, formatted on the stack).
    #[inline]
    pub fn stage_for_id(&self, id: u64) -> Stage {
        let mut buf = [0u8; 20];
        self.stage(decimal(id, &mut buf))
    }

    #[inline]
    pub fn stage_without_entity(&self) -> Stage {
        self.slot.stage(None).0
    }

    #[inline]
    pub fn plan(&self, entity_key: impl AsRef<[u8]>) -> Plan {
        self.stage(entity_key).plan()
    }

    /// The snapshot version of this migration's state (0 if no snapshot knows it).
    pub fn version(&self) -> u64 {
        self.slot.version()
    }
}

/// `id` in decimal, written into `buf`.
#[inline]
fn decimal(mut id: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (id % 10) as u8;
        id /= 10;
        if id == 0 {
            return &buf[i..];
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_are_bucketed_by_their_decimal_text() {
        let mut buf = [0u8; 20];
        for id in [0u64, 7, 42, 1_000_000, u64::MAX] {
            assert_eq!(super::decimal(id, &mut buf), id.to_string().as_bytes());
        }
    }
}
