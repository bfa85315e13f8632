//! The views' format and where they live: [`AccountView`] and [`TransactionView`] are the one
//! serialization of each view (the writer's publish, the reader's fill and its answer on a miss
//! all use them), and [`Keys`] names every key under the deployment's prefix.

use bytes::Bytes;

use crate::domain::{AccountId, AccountState, Transaction, TransactionId};

/// An account view: the JSON `GET /accounts/{id}` serves, as Redis holds it, with the version
/// that orders it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountView {
    pub(super) account_id: AccountId,
    pub(super) version: i64,
    pub(super) body: Bytes,
}

impl AccountView {
    pub fn new(state: &AccountState) -> Self {
        Self {
            account_id: state.account.account_id,
            version: state.version,
            body: json(&state.account),
        }
    }

    /// The JSON, exactly as served.
    pub fn into_body(self) -> Bytes {
        self.body
    }
}

/// A transaction view: the JSON `GET /transactions/{id}` serves, as Redis holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionView {
    pub(super) transaction_id: TransactionId,
    pub(super) body: Bytes,
}

impl TransactionView {
    pub fn new(transaction: &Transaction) -> Self {
        Self {
            transaction_id: transaction.transaction_id,
            body: json(transaction),
        }
    }

    /// The JSON, exactly as served.
    pub fn into_body(self) -> Bytes {
        self.body
    }
}

/// Serializing a view cannot fail: the domain types are structs of ids, integers and strings,
/// with no maps and no fallible `Serialize` of their own.
fn json(view: &impl serde::Serialize) -> Bytes {
    Bytes::from(serde_json::to_vec(view).expect("a domain type serializes to JSON"))
}

/// Where this deployment's keys live.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }
    /// An account view of the views' generation with this `epoch` (see `cache/link.rs`).
    pub fn account(&self, epoch: u64, id: AccountId) -> String {
        format!("{}account:{epoch}:{id}", self.prefix)
    }
    pub fn transaction(&self, id: TransactionId) -> String {
        format!("{}transaction:{id}", self.prefix)
    }
    pub fn events(&self) -> String {
        format!("{}events", self.prefix)
    }
    /// `{run_id}:{epoch}`: the generation the account views are current under.
    pub fn generation(&self) -> String {
        format!("{}views-generation", self.prefix)
    }
    /// The counter each new generation increments.
    pub fn epoch(&self) -> String {
        format!("{}views-epoch", self.prefix)
    }
}
