//! Column types shared by the PostgreSQL and SQLite stores, so that a row is
//! one `sqlx::FromRow` struct for both backends, a value is bound the same
//! way on both, and only the SQL text differs between the twins.
//!
//! Each newtype decodes (and encodes) the native type on PostgreSQL and this
//! service's SQLite convention on SQLite (see the migrations):
//! - [`DbUuid`]: `uuid` / TEXT;
//! - [`DbTime`]: `timestamptz` / INTEGER milliseconds since the epoch;
//! - [`DbJson`]: `jsonb` / TEXT;
//! - [`DbDecimal`]: `numeric` / TEXT (sqlx has no decimals on SQLite);
//! - [`DbList`]: a list as one parameter: an array on PostgreSQL
//!   (`col = ANY($1)`), a JSON array on SQLite
//!   (`col IN (SELECT value FROM json_each($1))`).

use std::any::Any;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use serde_json::Value;
use sqlx::{
    Database, Decode, Encode, Postgres, Sqlite, Type,
    encode::IsNull,
    error::BoxDynError,
    postgres::{PgArgumentBuffer, PgArguments, PgHasArrayType, PgTypeInfo, PgValueRef},
    query::Query,
    query_builder::Separated,
    sqlite::{SqliteTypeInfo, SqliteValueRef},
};
use uuid::Uuid;

/// A UUID column (also read from JSON, as a UUID's text).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(transparent)]
pub struct DbUuid(pub Uuid);

/// A point-in-time column (millisecond precision on SQLite).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct DbTime(pub DateTime<Utc>);

/// A JSON column.
#[derive(Debug, Clone, PartialEq)]
pub struct DbJson(pub Value);

/// An exact decimal column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DbDecimal(pub Decimal);

/// A list bound as one parameter (see the module documentation).
#[derive(Debug, Clone, Copy)]
pub struct DbList<'a, T>(pub &'a [T]);

/// `Type<$db>` for the newtype `$name`: the SQL type of `$stored`, the form
/// its value takes on `$db`.
macro_rules! stored_as {
    ($name:ident: $db:ident, $stored:ty) => {
        impl Type<$db> for $name {
            fn type_info() -> <$db as Database>::TypeInfo {
                <$stored as Type<$db>>::type_info()
            }

            fn compatible(ty: &<$db as Database>::TypeInfo) -> bool {
                <$stored as Type<$db>>::compatible(ty)
            }
        }
    };
}

/// Implements a column newtype on both databases: on PostgreSQL as its inner
/// type `$pg`, on SQLite as `$lite`, converted by `$decode` (`$lite` to
/// `Result<inner, _>`) and `$encode` (`&inner` to `$lite`).
macro_rules! column_type {
    ($name:ident: postgres $pg:ty, sqlite $lite:ty, $decode:expr, $encode:expr) => {
        stored_as!($name: Postgres, $pg);

        impl<'r> Decode<'r, Postgres> for $name {
            fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
                <$pg as Decode<Postgres>>::decode(value).map(Self)
            }
        }

        impl Encode<'_, Postgres> for $name {
            fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
                <$pg as Encode<Postgres>>::encode_by_ref(&self.0, buf)
            }
        }

        stored_as!($name: Sqlite, $lite);

        impl<'r> Decode<'r, Sqlite> for $name {
            fn decode(value: SqliteValueRef<'r>) -> Result<Self, BoxDynError> {
                let stored = <$lite as Decode<Sqlite>>::decode(value)?;
                let decode: fn($lite) -> Result<_, BoxDynError> = $decode;
                decode(stored).map(Self)
            }
        }

        impl Encode<'_, Sqlite> for $name {
            fn encode_by_ref(
                &self,
                buf: &mut <Sqlite as Database>::ArgumentBuffer,
            ) -> Result<IsNull, BoxDynError> {
                let encode: fn(&_) -> $lite = $encode;
                <$lite as Encode<Sqlite>>::encode(encode(&self.0), buf)
            }
        }
    };
}

column_type!(DbUuid: postgres Uuid, sqlite String, |text| Ok(Uuid::parse_str(&text)?), Uuid::to_string);

column_type!(
    DbTime: postgres DateTime<Utc>,
    sqlite i64,
    |millis| DateTime::from_timestamp_millis(millis).ok_or_else(|| format!("stored time {millis} out of range").into()),
    DateTime::timestamp_millis
);

column_type!(DbJson: postgres Value, sqlite String, |text| Ok(serde_json::from_str(&text)?), Value::to_string);

column_type!(DbDecimal: postgres Decimal, sqlite String, |text| Ok(text.parse()?), Decimal::to_string);

impl<T: PgHasArrayType> Type<Postgres> for DbList<'_, T> {
    fn type_info() -> PgTypeInfo {
        T::array_type_info()
    }

    fn compatible(ty: &PgTypeInfo) -> bool {
        T::array_compatible(ty)
    }
}

impl<'q, 'a, T: PgHasArrayType> Encode<'q, Postgres> for DbList<'a, T>
where
    &'a [T]: Encode<'q, Postgres>,
{
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        <&'a [T] as Encode<'q, Postgres>>::encode_by_ref(&self.0, buf)
    }
}

impl<T: Serialize> Type<Sqlite> for DbList<'_, T> {
    fn type_info() -> SqliteTypeInfo {
        <String as Type<Sqlite>>::type_info()
    }
}

impl<T: Serialize> Encode<'_, Sqlite> for DbList<'_, T> {
    fn encode_by_ref(&self, buf: &mut <Sqlite as Database>::ArgumentBuffer) -> Result<IsNull, BoxDynError> {
        <String as Encode<Sqlite>>::encode(serde_json::to_string(self.0)?, buf)
    }
}

impl PgHasArrayType for DbUuid {
    fn array_type_info() -> PgTypeInfo {
        Uuid::array_type_info()
    }
}

impl PgHasArrayType for DbTime {
    fn array_type_info() -> PgTypeInfo {
        DateTime::<Utc>::array_type_info()
    }
}

impl PgHasArrayType for DbJson {
    fn array_type_info() -> PgTypeInfo {
        Value::array_type_info()
    }
}

impl PgHasArrayType for DbDecimal {
    fn array_type_info() -> PgTypeInfo {
        Decimal::array_type_info()
    }
}

/// A value that binds on both databases, alone or (on PostgreSQL) in an
/// array: every column type of ours, plain or in a newtype of this module.
pub trait ColumnValue:
    for<'q> Encode<'q, Postgres>
    + Type<Postgres>
    + PgHasArrayType
    + for<'q> Encode<'q, Sqlite>
    + Type<Sqlite>
    + Send
    + Sync
    + 'static
{
}

impl<T> ColumnValue for T where
    T: for<'q> Encode<'q, Postgres>
        + Type<Postgres>
        + PgHasArrayType
        + for<'q> Encode<'q, Sqlite>
        + Type<Sqlite>
        + Send
        + Sync
        + 'static
{
}

/// Takes a row's values one column after another: a row's binds are
/// written once, and each backend collects them its way (a `VALUES` tuple,
/// or one array per column).
pub trait ColumnSink {
    /// The next column's value.
    fn value<T: ColumnValue>(&mut self, value: T) -> &mut Self;
}

impl ColumnSink for Separated<'_, Postgres, &'static str> {
    fn value<T: ColumnValue>(&mut self, value: T) -> &mut Self {
        self.push_bind(value)
    }
}

impl ColumnSink for Separated<'_, Sqlite, &'static str> {
    fn value<T: ColumnValue>(&mut self, value: T) -> &mut Self {
        self.push_bind(value)
    }
}

/// Rows gathered column by column, each column bound as one array: the
/// parameters of PostgreSQL's `UNNEST($1, $2, ..)`, one statement for any
/// number of rows. Call [`PgArrays::row`] before each row's values.
#[derive(Default)]
pub struct PgArrays {
    columns: Vec<Box<dyn PgArray>>,
    next: usize,
    /// A row gave a column a value of another type than the first row did.
    mixed: Option<usize>,
}

impl PgArrays {
    /// Starts the next row.
    pub fn row(&mut self) -> &mut Self {
        self.next = 0;
        self
    }

    /// How many columns the rows have: the parameters [`PgArrays::bind`] binds.
    pub fn width(&self) -> usize {
        self.columns.len()
    }

    /// Binds every column, in order, as one array parameter each.
    pub fn bind<'q>(
        self,
        mut query: Query<'q, Postgres, PgArguments>,
    ) -> sqlx::Result<Query<'q, Postgres, PgArguments>> {
        if let Some(column) = self.mixed {
            return Err(sqlx::Error::Encode(
                format!("column {column} was given values of two types").into(),
            ));
        }
        for column in self.columns {
            query = column.bind(query);
        }
        Ok(query)
    }
}

impl ColumnSink for PgArrays {
    fn value<T: ColumnValue>(&mut self, value: T) -> &mut Self {
        match self.columns.get_mut(self.next) {
            None => self.columns.push(Box::new(vec![value])),
            Some(column) => match column.as_any().downcast_mut::<Vec<T>>() {
                Some(values) => values.push(value),
                None => self.mixed = Some(self.next),
            },
        }
        self.next += 1;
        self
    }
}

/// One column's values, whatever their type.
trait PgArray: Send {
    fn as_any(&mut self) -> &mut dyn Any;
    fn bind<'q>(self: Box<Self>, query: Query<'q, Postgres, PgArguments>)
    -> Query<'q, Postgres, PgArguments>;
}

impl<T: ColumnValue> PgArray for Vec<T> {
    fn as_any(&mut self) -> &mut dyn Any {
        self
    }

    fn bind<'q>(
        self: Box<Self>,
        query: Query<'q, Postgres, PgArguments>,
    ) -> Query<'q, Postgres, PgArguments> {
        query.bind(*self)
    }
}
