//! Domain types, the bottom layer: they know nothing of HTTP, storage or settings. Raw request
//! data is parsed into these before any handler logic runs ("parse, don't validate"): a
//! `NewTransaction` can only exist if its fields are valid.
//!
//! `domain/input.rs`: what clients send; `domain/ledger.rs`: what the ledger holds;
//! `domain/listing.rs`: cursors and query parameters of listings.

mod input;
mod ledger;
mod listing;

pub use input::{AccountId, Amount, IdempotencyKey, Identifier, NewTransaction, TransactionId};
pub use ledger::{Account, AccountState, Recorded, Transaction};
pub use listing::{Cursor, ListQuery, PageLimit};

/// Why client input was refused. Each message names the field and the problem; it is sent to
/// the client as-is, so it must never contain internal details.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    #[error("request body must be a JSON object")]
    NotAnObject,
    #[error("{0} is required")]
    MissingField(&'static str),
    #[error("{0} must be a UUID string")]
    NotAUuid(&'static str),
    #[error("amount must be an integer")]
    AmountNotAnInteger,
    #[error("amount must be an integer from -9007199254740991 to 9007199254740991 (2^53 - 1, the largest every JSON client holds exactly)")]
    AmountOutOfRange,
    #[error("Idempotency-Key must be 1 to 255 printable ASCII characters")]
    InvalidIdempotencyKey,
    #[error("limit must be an integer from 1 to {}", PageLimit::MAX)]
    InvalidLimit,
    #[error("after must be a cursor taken from a previous page's Link header")]
    InvalidCursor,
}
