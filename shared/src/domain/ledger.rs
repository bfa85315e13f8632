//! What the ledger holds, as clients see it: transactions and accounts.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Serialize, Serializer};

use super::{AccountId, Amount, TransactionId};

/// A recorded transaction, as clients see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Transaction {
    pub transaction_id: TransactionId,
    pub account_id: AccountId,
    pub amount: Amount,
    #[serde(serialize_with = "rfc3339_micros")]
    pub created_at: DateTime<Utc>,
}

/// An account, as clients see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Account {
    pub account_id: AccountId,
    pub balance: i64,
}

/// An account's state at a version: what the writer publishes and the reader caches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccountState {
    pub account: Account,
    /// Number of transactions applied to the account; grows by one with each.
    pub version: i64,
}

/// What one `POST /transactions` committed: the transaction and its account right after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    pub transaction: Transaction,
    pub account: AccountState,
}

/// `2021-05-12T18:29:40.206924+00:00`: RFC 3339 with microseconds (PostgreSQL's precision)
/// and a numeric offset, as in the contract's example.
fn rfc3339_micros<S: Serializer>(at: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&at.to_rfc3339_opts(SecondsFormat::Micros, false))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn created_at_is_serialized_with_microseconds_and_an_offset() {
        let created_at = DateTime::parse_from_rfc3339("2021-05-12T18:29:40.206924Z")
            .expect("date")
            .with_timezone(&Utc);
        let transaction = Transaction {
            transaction_id: TransactionId::parse("4bcc3959-6fe1-406e-9f04-cad2637b47d5")
                .expect("id"),
            account_id: AccountId::parse("0afd02d3-6c59-46e7-b7bc-893c5e0b7ac2").expect("id"),
            amount: Amount::from(7),
            created_at,
        };
        assert_eq!(
            serde_json::to_value(&transaction).expect("serializes"),
            json!({
                "transaction_id": "4bcc3959-6fe1-406e-9f04-cad2637b47d5",
                "account_id": "0afd02d3-6c59-46e7-b7bc-893c5e0b7ac2",
                "amount": 7,
                "created_at": "2021-05-12T18:29:40.206924+00:00"
            })
        );
    }
}
