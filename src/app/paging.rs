//! Page tokens shared by the paged queries (ListOrders, ListSagas).

/// The time a page token carries, if it is one a response of ours could
/// have made: from 1970 to a day from now (the rows it points at were written
/// by us). A crafted time outside what the database stores would otherwise
/// fail the query instead of the request.
pub fn page_token_time(micros: i64) -> Option<chrono::DateTime<chrono::Utc>> {
    let at = chrono::DateTime::from_timestamp_micros(micros)?;
    (micros >= 0 && at <= chrono::Utc::now() + chrono::Duration::days(1)).then_some(at)
}
