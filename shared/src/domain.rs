//! Domain types. Raw request data is parsed into these before any handler logic runs
//! ("parse, don't validate"): a `NewTransaction` can only exist if its fields are valid.

use std::fmt;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Serialize, Serializer};
use serde_json::{Map, Value};
use uuid::Uuid;

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
    #[error("amount must fit in a signed 64-bit integer")]
    AmountOutOfRange,
    #[error("Idempotency-Key must be 1 to 255 printable ASCII characters")]
    InvalidIdempotencyKey,
    #[error("limit must be an integer from 1 to {}", PageLimit::MAX)]
    InvalidLimit,
    #[error("after must be a cursor taken from a previous page's Link header")]
    InvalidCursor,
}

/// A UUID-based id, with the name of the field or path parameter it travels in.
pub trait Identifier: Sized {
    const FIELD: &'static str;
    fn parse(raw: &str) -> Result<Self, ValidationError>;
}

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident, $field:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// The JSON field and path parameter this id travels in.
            pub const FIELD: &'static str = $field;

            /// Parses any of the textual UUID forms the `uuid` crate accepts.
            pub fn parse(raw: &str) -> Result<Self, ValidationError> {
                Uuid::try_parse(raw)
                    .map(Self)
                    .map_err(|_| ValidationError::NotAUuid($field))
            }

            pub fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl Identifier for $name {
            const FIELD: &'static str = $field;
            fn parse(raw: &str) -> Result<Self, ValidationError> {
                Self::parse(raw)
            }
        }

        impl From<Uuid> for $name {
            fn from(uuid: Uuid) -> Self {
                Self(uuid)
            }
        }

        impl fmt::Display for $name {
            /// Always the canonical lower-case hyphenated form, whatever form was parsed.
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.as_hyphenated().fmt(f)
            }
        }
    };
}

uuid_id!(
    /// An account, chosen by the client. It exists once it has a transaction.
    AccountId,
    "account_id"
);
uuid_id!(
    /// A transaction, assigned by the server.
    TransactionId,
    "transaction_id"
);

impl TransactionId {
    pub fn new_random() -> Self {
        Self(Uuid::new_v4())
    }
}

/// Money in whole units: positive is a deposit, negative a withdrawal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Amount(i64);

impl Amount {
    /// Accepts only JSON integers that fit in an `i64`. `7.0` and `7.5` are refused: the
    /// contract says whole units, and a float would silently lose precision above 2^53.
    pub fn parse(value: &Value) -> Result<Self, ValidationError> {
        let Value::Number(number) = value else {
            return Err(ValidationError::AmountNotAnInteger);
        };
        if let Some(amount) = number.as_i64() {
            return Ok(Self(amount));
        }
        if number.is_u64() {
            return Err(ValidationError::AmountOutOfRange);
        }
        // serde_json reads integer literals beyond u64 as floats: tell "too big" apart from
        // "has a fraction".
        match number.as_f64() {
            Some(float) if float.is_finite() && float.fract() == 0.0 && float.abs() >= 9.2e18 => {
                Err(ValidationError::AmountOutOfRange)
            }
            _ => Err(ValidationError::AmountNotAnInteger),
        }
    }

    pub fn value(self) -> i64 {
        self.0
    }
}

impl From<i64> for Amount {
    fn from(amount: i64) -> Self {
        Self(amount)
    }
}

/// A client-chosen key that makes a `POST /transactions` safe to retry: the same key with the
/// same request applies it once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub const MAX_LEN: usize = 255;

    pub fn parse(raw: &[u8]) -> Result<Self, ValidationError> {
        let printable = raw.iter().all(|byte| (0x20..=0x7e).contains(byte));
        match std::str::from_utf8(raw) {
            Ok(key) if printable && !key.trim().is_empty() && key.len() <= Self::MAX_LEN => {
                Ok(Self(key.to_owned()))
            }
            _ => Err(ValidationError::InvalidIdempotencyKey),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A valid `POST /transactions` request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewTransaction {
    pub account_id: AccountId,
    pub amount: Amount,
}

impl TryFrom<Value> for NewTransaction {
    type Error = ValidationError;

    fn try_from(body: Value) -> Result<Self, Self::Error> {
        match body {
            Value::Object(fields) => Self::try_from(&fields),
            _ => Err(ValidationError::NotAnObject),
        }
    }
}

impl TryFrom<&Map<String, Value>> for NewTransaction {
    type Error = ValidationError;

    /// Unknown fields are ignored, so that clients may send more than the contract needs.
    fn try_from(fields: &Map<String, Value>) -> Result<Self, Self::Error> {
        let account_id = match fields.get(AccountId::FIELD) {
            None | Some(Value::Null) => return Err(ValidationError::MissingField("account_id")),
            Some(Value::String(raw)) => AccountId::parse(raw)?,
            Some(_) => return Err(ValidationError::NotAUuid("account_id")),
        };
        let amount = match fields.get("amount") {
            None | Some(Value::Null) => return Err(ValidationError::MissingField("amount")),
            Some(value) => Amount::parse(value)?,
        };
        Ok(Self { account_id, amount })
    }
}

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

/// A position in the newest-first listing of transactions (the row's `seq`). A page's cursor is
/// the position of its last transaction; the next page starts below it. Clients see it as the
/// opaque `c<seq>` and get it from a `Link` header, never build it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cursor(i64);

impl Cursor {
    pub fn at(seq: i64) -> Self {
        Self(seq)
    }

    pub fn seq(self) -> i64 {
        self.0
    }

    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        raw.strip_prefix('c')
            .and_then(|seq| seq.parse::<i64>().ok())
            .filter(|seq| *seq > 0)
            .map(Self)
            .ok_or(ValidationError::InvalidCursor)
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "c{}", self.0)
    }
}

/// How many transactions a client asks for in one page: 1 to [`PageLimit::MAX`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageLimit(i64);

impl PageLimit {
    /// Largest page a client may ask for.
    pub const MAX: i64 = 1000;

    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        match raw.parse::<i64>() {
            Ok(limit) if (1..=Self::MAX).contains(&limit) => Ok(Self(limit)),
            _ => Err(ValidationError::InvalidLimit),
        }
    }

    pub fn value(self) -> i64 {
        self.0
    }
}

/// The query parameters of `GET /transactions`, parsed; each is optional. Without any, the
/// answer is every transaction (the contract); `limit` asks for one page.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ListQuery {
    /// Only this account's transactions.
    pub account_id: Option<AccountId>,
    /// One page of at most this many, with a link to the next.
    pub limit: Option<PageLimit>,
    /// Only the transactions after this cursor in the listing (older ones).
    pub after: Option<Cursor>,
}

impl ListQuery {
    /// Parses the raw parameters (as they came in the query string), checked in this order.
    pub fn parse(
        account_id: Option<&str>,
        limit: Option<&str>,
        after: Option<&str>,
    ) -> Result<Self, ValidationError> {
        Ok(Self {
            account_id: account_id.map(AccountId::parse).transpose()?,
            limit: limit.map(PageLimit::parse).transpose()?,
            after: after.map(Cursor::parse).transpose()?,
        })
    }
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
    fn a_valid_body_parses_into_a_new_transaction() {
        let parsed = NewTransaction::try_from(
            json!({"account_id": "0afd02d3-6c59-46e7-b7bc-893c5e0b7ac2", "amount": -4}),
        )
        .expect("valid body");
        assert_eq!(
            parsed.account_id.to_string(),
            "0afd02d3-6c59-46e7-b7bc-893c5e0b7ac2"
        );
        assert_eq!(parsed.amount.value(), -4);
    }

    #[test]
    fn account_ids_are_printed_in_canonical_form_whatever_form_was_sent() {
        let id = AccountId::parse("0AFD02D36C5946E7B7BC893C5E0B7AC2").expect("simple form");
        assert_eq!(id.to_string(), "0afd02d3-6c59-46e7-b7bc-893c5e0b7ac2");
    }

    #[test]
    fn missing_fields_are_named() {
        assert_eq!(
            NewTransaction::try_from(json!({"amount": 1})),
            Err(ValidationError::MissingField("account_id"))
        );
        assert_eq!(
            NewTransaction::try_from(json!({"account_id": "0afd02d3-6c59-46e7-b7bc-893c5e0b7ac2"})),
            Err(ValidationError::MissingField("amount"))
        );
        assert_eq!(
            NewTransaction::try_from(json!({"account_id": null, "amount": 1})),
            Err(ValidationError::MissingField("account_id"))
        );
    }

    #[test]
    fn an_account_id_that_is_not_a_uuid_string_is_refused() {
        for bad in [
            json!(10),
            json!("not-a-uuid"),
            json!(""),
            json!(["x"]),
            json!({}),
        ] {
            assert_eq!(
                NewTransaction::try_from(json!({"account_id": bad, "amount": 1})),
                Err(ValidationError::NotAUuid("account_id")),
                "{bad}"
            );
        }
    }

    #[test]
    fn amounts_must_be_integers() {
        for bad in [
            json!(1.5),
            json!(7.0),
            json!("7"),
            json!(true),
            json!([7]),
            json!(1e-3),
        ] {
            assert_eq!(
                Amount::parse(&bad),
                Err(ValidationError::AmountNotAnInteger),
                "{bad}"
            );
        }
    }

    #[test]
    fn amounts_must_fit_in_64_bits() {
        assert_eq!(Amount::parse(&json!(i64::MAX)), Ok(Amount(i64::MAX)));
        assert_eq!(Amount::parse(&json!(i64::MIN)), Ok(Amount(i64::MIN)));
        assert_eq!(
            Amount::parse(&json!(i64::MAX as u64 + 1)),
            Err(ValidationError::AmountOutOfRange)
        );
        let huge: Value = serde_json::from_str("123456789012345678901234567890").expect("json");
        assert_eq!(Amount::parse(&huge), Err(ValidationError::AmountOutOfRange));
        let very_negative: Value = serde_json::from_str("-9223372036854775809").expect("json");
        assert_eq!(
            Amount::parse(&very_negative),
            Err(ValidationError::AmountOutOfRange)
        );
    }

    #[test]
    fn idempotency_keys_are_bounded_printable_ascii() {
        assert_eq!(
            IdempotencyKey::parse(b"order-42/retry ok").map(|key| key.0),
            Ok("order-42/retry ok".to_owned())
        );
        assert!(IdempotencyKey::parse(&[b'k'; 255]).is_ok());
        for bad in [
            &b""[..],
            b"   ",
            &[b'k'; 256],
            b"tab\there",
            "é".as_bytes(),
            b"nul\0",
        ] {
            assert_eq!(
                IdempotencyKey::parse(bad),
                Err(ValidationError::InvalidIdempotencyKey),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_body_that_is_not_an_object_is_refused() {
        for bad in [json!([]), json!(null), json!("x"), json!(3)] {
            assert_eq!(
                NewTransaction::try_from(bad),
                Err(ValidationError::NotAnObject)
            );
        }
    }

    #[test]
    fn list_parameters_parse_into_an_account_a_page_limit_and_a_cursor() {
        let query = ListQuery::parse(
            Some("0afd02d3-6c59-46e7-b7bc-893c5e0b7ac2"),
            Some("1000"),
            Some("c42"),
        )
        .expect("valid");
        assert_eq!(
            query.account_id.map(|id| id.to_string()).as_deref(),
            Some("0afd02d3-6c59-46e7-b7bc-893c5e0b7ac2")
        );
        assert_eq!(query.limit.map(PageLimit::value), Some(1000));
        assert_eq!(query.after.map(Cursor::seq), Some(42));
        assert_eq!(ListQuery::parse(None, None, None), Ok(ListQuery::default()));
    }

    #[test]
    fn a_cursor_reads_back_what_it_prints() {
        let cursor = Cursor::at(17);
        assert_eq!(cursor.to_string(), "c17");
        assert_eq!(Cursor::parse(&cursor.to_string()), Ok(cursor));
    }

    #[test]
    fn bad_list_parameters_are_refused_naming_the_parameter() {
        for limit in ["0", "1001", "ten", "-1", "", "1.5"] {
            let error = ListQuery::parse(None, Some(limit), None).expect_err(limit);
            assert_eq!(error, ValidationError::InvalidLimit, "{limit}");
            assert!(error.to_string().starts_with("limit "), "{error}");
        }
        for after in ["42", "c-1", "c0", "c", "cx", "C42"] {
            let error = ListQuery::parse(None, None, Some(after)).expect_err(after);
            assert_eq!(error, ValidationError::InvalidCursor, "{after}");
            assert!(error.to_string().starts_with("after "), "{error}");
        }
        assert_eq!(
            ListQuery::parse(Some("nope"), None, None),
            Err(ValidationError::NotAUuid("account_id"))
        );
    }

    #[test]
    fn created_at_is_serialized_with_microseconds_and_an_offset() {
        let created_at = DateTime::parse_from_rfc3339("2021-05-12T18:29:40.206924Z")
            .expect("date")
            .with_timezone(&Utc);
        let transaction = Transaction {
            transaction_id: TransactionId::parse("4bcc3959-6fe1-406e-9f04-cad2637b47d5")
                .expect("id"),
            account_id: AccountId::parse("0afd02d3-6c59-46e7-b7bc-893c5e0b7ac2").expect("id"),
            amount: Amount(7),
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
