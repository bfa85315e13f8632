//! Listing transactions: positions in the newest-first listing, page sizes, and the query
//! parameters of `GET /transactions`.

use std::fmt;

use super::{AccountId, ValidationError};

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
