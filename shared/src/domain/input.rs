//! What a client sends, parsed: ids, amounts, idempotency keys and the `POST /transactions`
//! body. Each type can only hold a valid value.

use std::fmt;

use serde::Serialize;
use serde_json::{Map, Value};
use uuid::Uuid;

use super::ValidationError;

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

/// Money in whole units: positive is a deposit, negative a withdrawal, zero is recorded (a
/// transaction that moves nothing; see docs/api-contract.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Amount(i64);

impl Amount {
    /// The largest magnitude of an amount, and of a balance: 2^53 - 1, the largest integer that
    /// every JSON client holds exactly (JavaScript's `Number`, any IEEE double). Beyond it a
    /// client would silently read a different number than the ledger holds.
    pub const MAX_SAFE: i64 = (1 << 53) - 1;

    /// Accepts only JSON integers from -[`Self::MAX_SAFE`] to [`Self::MAX_SAFE`]. `7.0` and
    /// `7.5` are refused: the contract says whole units.
    pub fn parse(value: &Value) -> Result<Self, ValidationError> {
        let Value::Number(number) = value else {
            return Err(ValidationError::AmountNotAnInteger);
        };
        if let Some(amount) = number.as_i64() {
            return match amount.checked_abs() {
                Some(magnitude) if magnitude <= Self::MAX_SAFE => Ok(Self(amount)),
                _ => Err(ValidationError::AmountOutOfRange),
            };
        }
        if number.is_u64() {
            return Err(ValidationError::AmountOutOfRange);
        }
        // serde_json reads integer literals beyond u64, and exponents, as floats: tell "too big"
        // apart from "has a fraction".
        match number.as_f64() {
            Some(float)
                if float.is_finite()
                    && float.fract() == 0.0
                    && float.abs() > Self::MAX_SAFE as f64 =>
            {
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
/// same request applies it once. Keys are scoped: with API keys on, to the API key that sent it
/// (two clients never share a key, nor learn of each other's); without, to everyone.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey {
    key: String,
    scope: String,
}

impl IdempotencyKey {
    pub const MAX_LEN: usize = 255;

    /// A key in the unscoped namespace (no API keys); see [`Self::scoped_to`].
    pub fn parse(raw: &[u8]) -> Result<Self, ValidationError> {
        let printable = raw.iter().all(|byte| (0x20..=0x7e).contains(byte));
        match std::str::from_utf8(raw) {
            Ok(key) if printable && !key.trim().is_empty() && key.len() <= Self::MAX_LEN => {
                Ok(Self {
                    key: key.to_owned(),
                    scope: String::new(),
                })
            }
            _ => Err(ValidationError::InvalidIdempotencyKey),
        }
    }

    /// The same key in the namespace of one API key (its id).
    pub fn scoped_to(self, scope: &str) -> Self {
        Self {
            scope: scope.to_owned(),
            ..self
        }
    }

    pub fn as_str(&self) -> &str {
        &self.key
    }

    /// The id of the API key whose namespace this key is in; empty without API keys.
    pub fn scope(&self) -> &str {
        &self.scope
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
    fn amounts_must_be_integers_json_clients_hold_exactly() {
        let max = Amount::MAX_SAFE;
        assert_eq!(max, 9_007_199_254_740_991);
        assert_eq!(Amount::parse(&json!(max)), Ok(Amount(max)));
        assert_eq!(Amount::parse(&json!(-max)), Ok(Amount(-max)));
        assert_eq!(Amount::parse(&json!(0)), Ok(Amount(0)));
        for beyond in [
            json!(max + 1),
            json!(-max - 1),
            json!(i64::MAX),
            json!(i64::MIN),
            json!(i64::MAX as u64 + 1),
        ] {
            assert_eq!(
                Amount::parse(&beyond),
                Err(ValidationError::AmountOutOfRange),
                "{beyond}"
            );
        }
        for literal in [
            "123456789012345678901234567890",
            "-9223372036854775809",
            "9007199254740993e0",
            "1e300",
        ] {
            let huge: Value = serde_json::from_str(literal).expect("json");
            assert_eq!(
                Amount::parse(&huge),
                Err(ValidationError::AmountOutOfRange),
                "{literal}"
            );
        }
    }

    #[test]
    fn idempotency_keys_are_bounded_printable_ascii() {
        assert_eq!(
            IdempotencyKey::parse(b"order-42/retry ok").map(|key| key.key),
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
}
