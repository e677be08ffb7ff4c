//! How both backends write and read the manager's own ids (as the text
//! they are) and instants (as integers), in SQLite and MongoDB alike.

use mongodb::bson::Bson;
use rusqlite::types::{FromSql, FromSqlResult, ToSql, ToSqlOutput, ValueRef};

use crate::clock::UnixMillis;
use crate::domain::{ClaimId, DeliveryId, EventId, SubscriptionId};

macro_rules! stored_as_text {
    ($($name:ident),*) => {$(
        impl ToSql for $name {
            fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
                Ok(ToSqlOutput::from(self.as_str()))
            }
        }

        impl FromSql for $name {
            fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
                String::column_result(value).map(Self::from)
            }
        }

        // `&id` too, through the driver's blanket impl for references.
        impl From<$name> for Bson {
            fn from(id: $name) -> Self {
                Bson::String(id.as_str().to_owned())
            }
        }
    )*};
}

stored_as_text!(EventId, DeliveryId, SubscriptionId, ClaimId);

/// Instants are integers in both stores (as they were before the type
/// existed), so every database written by an earlier release reads as is.
impl ToSql for UnixMillis {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.as_millis()))
    }
}

impl FromSql for UnixMillis {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        i64::column_result(value).map(UnixMillis::from_millis)
    }
}

impl From<UnixMillis> for Bson {
    fn from(at: UnixMillis) -> Self {
        Bson::Int64(at.as_millis())
    }
}
