//! PostgreSQL migration SQL as Switchyard reads it, parsed with sqlparser (PostgreSQL dialect):
//! the lock and compatibility lint behind `switchyard lint`, the objects a contract file drops,
//! and which of those objects a (normalized) statement references.

mod lint;
mod refs;
pub mod rules;
mod split;

pub use lint::{Finding, is_contract, is_retire_or_restore, lint};
pub use refs::{Certainty, Name, ParseError, Reference, SchemaObject, contract_drops, references};
pub use rules::{RULES, Rule};

#[cfg(test)]
mod tests;
