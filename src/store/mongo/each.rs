//! `Each`: a condition on one delivery inside an event document, used both
//! to find the documents (`$elemMatch`) and, as the array filter `d`, to
//! update exactly the deliveries it matches; and checked again in memory on
//! the elements read back. Every update of a delivery goes through it.

use mongodb::action::{FindOneAndUpdate, Update};
use mongodb::bson::{doc, Bson, Document};
use mongodb::options::ReturnDocument;
use mongodb::Collection;

use super::bson_i64;

/// A condition on one delivery of an event document, usable both to find the
/// documents (`$elemMatch`) and, as the array filter `d`, to update exactly
/// the deliveries it matches (`deliveries.$[d].field`).
#[derive(Debug, Clone)]
pub(super) struct Each(pub Document);

impl Each {
    /// Documents holding at least one matching delivery.
    pub fn matching(&self) -> Document {
        doc! {"deliveries": {"$elemMatch": self.0.clone()}}
    }

    /// The same condition as the array filter named `d`.
    pub fn array_filter(&self) -> Document {
        self.0
            .iter()
            .map(|(k, v)| (format!("d.{k}"), v.clone()))
            .collect()
    }

    /// `update` made safe for servers that check the array filter again
    /// before each path they write (the MongoDB-wire test server does; a
    /// MongoDB server matches the elements once): every other operator
    /// first, then `$set` with the fields the filter reads last, so that no
    /// write un-matches an element before its other fields are written.
    /// (Each update here changes at most one field its filter reads.)
    fn ordered(&self, update: Document) -> Document {
        let reads = |path: &str| {
            path.strip_prefix("deliveries.$[d].")
                .is_some_and(|field| self.0.contains_key(field))
        };
        let mut out = Document::new();
        let mut set = None;
        for (op, fields) in update {
            match (op.as_str(), fields) {
                ("$set", Bson::Document(fields)) => set = Some(fields),
                (_, fields) => {
                    out.insert(op, fields);
                }
            }
        }
        if let Some(fields) = set {
            let (last, first): (Vec<_>, Vec<_>) = fields.into_iter().partition(|(k, _)| reads(k));
            out.insert("$set", first.into_iter().chain(last).collect::<Document>());
        }
        out
    }

    /// `update` written to exactly the matching deliveries of every event
    /// document holding one.
    pub fn update_many<'a>(
        &self,
        events: &'a Collection<Document>,
        update: Document,
    ) -> Update<'a> {
        self.update_many_where(events, Document::new(), update)
    }

    /// The same, on the event documents that also match `also` (a condition
    /// on the event, not on a delivery).
    pub fn update_many_where<'a>(
        &self,
        events: &'a Collection<Document>,
        also: Document,
        update: Document,
    ) -> Update<'a> {
        let mut query = self.matching();
        query.extend(also);
        events
            .update_many(query, self.ordered(update))
            .array_filters([self.array_filter()])
    }

    /// `update` on the matching deliveries of the first event document holding one.
    pub fn update_one<'a>(&self, events: &'a Collection<Document>, update: Document) -> Update<'a> {
        events
            .update_one(self.matching(), self.ordered(update))
            .array_filters([self.array_filter()])
    }

    /// `update` on the matching deliveries of one event document, returned
    /// as it is after the update.
    pub fn find_one_and_update<'a>(
        &self,
        events: &'a Collection<Document>,
        update: Document,
    ) -> FindOneAndUpdate<'a, Document> {
        events
            .find_one_and_update(self.matching(), self.ordered(update))
            .array_filters([self.array_filter()])
            .return_document(ReturnDocument::After)
    }

    /// Whether one delivery element (as read back) meets the condition: the
    /// same condition the query used, checked again in memory on the
    /// elements of the documents it found (a document found for one
    /// matching delivery holds others). Knows equality, `$in`, `$nin` and `$lte`;
    /// anything else does not match.
    pub fn holds(&self, element: &Document) -> bool {
        self.0.iter().all(|(field, wanted)| {
            let value = element.get(field).unwrap_or(&Bson::Null);
            match wanted {
                Bson::Document(op) => op.iter().all(|(name, arg)| match (name.as_str(), arg) {
                    ("$in", Bson::Array(options)) => options.contains(value),
                    ("$nin", Bson::Array(options)) => !options.contains(value),
                    ("$lte", limit) => match (bson_i64(value), bson_i64(limit)) {
                        (Some(v), Some(l)) => v <= l,
                        _ => false,
                    },
                    _ => false,
                }),
                other => {
                    other == value
                        || matches!((bson_i64(other), bson_i64(value)), (Some(a), Some(b)) if a == b)
                }
            }
        })
    }

    pub fn with(mut self, key: &str, value: impl Into<Bson>) -> Self {
        self.0.insert(key, value);
        self
    }
}

/// `{"a": 1}` as `{"deliveries.$[d].a": 1}`: fields of the matched deliveries.
pub(super) fn each_field(fields: Document) -> Document {
    fields
        .into_iter()
        .map(|(k, v)| (format!("deliveries.$[d].{k}"), v))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The claim id the filter reads is written after everything else, and
    /// the counter before any `$set`: a server that checks the filter again
    /// per path still writes every field of the outcome.
    #[test]
    fn the_field_the_filter_reads_is_written_last() {
        let each = Each(doc! {"id": "d1", "claimId": "c1"});
        let update = doc! {
            "$set": each_field(doc! {"status": "delivered", "claimId": Bson::Null, "updatedAt": 5i64}),
            "$inc": {"deliveries.$[d].attempts": 1i64},
        };
        let ordered = each.ordered(update);
        let ops: Vec<&str> = ordered.keys().map(String::as_str).collect();
        assert_eq!(ops, ["$inc", "$set"]);
        let set: Vec<&str> = ordered
            .get_document("$set")
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            set,
            [
                "deliveries.$[d].status",
                "deliveries.$[d].updatedAt",
                "deliveries.$[d].claimId"
            ]
        );
        assert_eq!(each.array_filter(), doc! {"d.id": "d1", "d.claimId": "c1"});
    }

    /// The in-memory check agrees with the query on the elements of a found
    /// document: a due delivery beside one leased and one not yet due.
    #[test]
    fn an_element_holds_the_condition_the_query_used() {
        let due = Each(doc! {
            "status": {"$in": ["pending", "parked"]},
            "nextAttemptAt": {"$lte": 100i64},
            "leaseUntil": 0i64,
        });
        let element = |status: &str, next: i64, lease: Bson| {
            doc! {"status": status, "nextAttemptAt": next, "leaseUntil": lease}
        };
        assert!(due.holds(&element("pending", 100, Bson::Int64(0))));
        assert!(
            due.holds(&element("parked", 5, Bson::Int32(0))),
            "numbers compare by value"
        );
        assert!(
            !due.holds(&element("pending", 101, Bson::Int64(0))),
            "not yet due"
        );
        assert!(!due.holds(&element("pending", 5, Bson::Int64(7))), "leased");
        assert!(
            !due.holds(&element("dead", 5, Bson::Int64(0))),
            "another status"
        );
        assert!(
            !due.holds(&doc! {"status": "pending"}),
            "missing fields do not match"
        );
        let unknown = Each(doc! {"attempts": {"$gt": 1i64}});
        assert!(
            !unknown.holds(&doc! {"attempts": 5i64}),
            "unknown operators never match"
        );
    }
}
