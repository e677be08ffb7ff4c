//! What the manager asks of MongoDB, counted through the driver's command
//! monitoring when `MONGO_COMMAND_COUNTS` is on: commands by name and the
//! documents they wrote. Divided by the callbacks accepted meanwhile, these
//! are the figures that carry over from any test server to a real `mongod`.
//! Off by default: with a handler set the driver copies every command it
//! sends into an event.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use mongodb::bson::Document;
use mongodb::event::command::CommandEvent;
use mongodb::event::EventHandler;

use crate::store::CommandCount;

#[derive(Debug, Default)]
pub struct CommandCounts {
    by_name: Mutex<BTreeMap<String, CommandCount>>,
}

impl CommandCounts {
    pub fn handler(self: &Arc<Self>) -> EventHandler<CommandEvent> {
        let counts = self.clone();
        EventHandler::callback(move |event: CommandEvent| match event {
            CommandEvent::Succeeded(e) => {
                counts.note(&e.command_name, written(&e.command_name, &e.reply))
            }
            CommandEvent::Failed(e) => counts.note(&e.command_name, 0),
            _ => {}
        })
    }

    fn note(&self, name: &str, written: u64) {
        let mut by_name = self.by_name.lock().unwrap_or_else(|p| p.into_inner());
        let count = by_name.entry(name.to_owned()).or_default();
        count.commands += 1;
        count.written += written;
    }

    /// Every command name seen, with its counts.
    pub fn snapshot(&self) -> Vec<(String, CommandCount)> {
        let by_name = self.by_name.lock().unwrap_or_else(|p| p.into_inner());
        by_name.iter().map(|(n, c)| (n.clone(), *c)).collect()
    }
}

/// Documents a command's reply says it wrote.
fn written(name: &str, reply: &Document) -> u64 {
    let number = |d: &Document, key: &str| {
        d.get(key)
            .and_then(|v| v.as_i64().or_else(|| v.as_i32().map(i64::from)))
            .unwrap_or(0)
            .max(0) as u64
    };
    match name {
        "insert" | "delete" => number(reply, "n"),
        "update" => {
            number(reply, "nModified") + reply.get_array("upserted").map_or(0, |u| u.len() as u64)
        }
        "findAndModify" => reply
            .get_document("lastErrorObject")
            .map_or(0, |l| number(l, "n")),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::bson::doc;

    #[test]
    fn writes_are_read_from_each_kind_of_reply() {
        assert_eq!(written("insert", &doc! {"n": 64, "ok": 1}), 64);
        assert_eq!(
            written(
                "update",
                &doc! {"n": 3, "nModified": 2, "upserted": [{"index": 0}]}
            ),
            3
        );
        assert_eq!(
            written(
                "findAndModify",
                &doc! {"lastErrorObject": {"n": 1}, "value": {}}
            ),
            1
        );
        assert_eq!(written("find", &doc! {"cursor": {}}), 0);
        let counts = CommandCounts::default();
        counts.note("insert", 10);
        counts.note("insert", 5);
        counts.note("find", 0);
        assert_eq!(
            counts.snapshot(),
            [
                (
                    "find".to_owned(),
                    CommandCount {
                        commands: 1,
                        written: 0
                    }
                ),
                (
                    "insert".to_owned(),
                    CommandCount {
                        commands: 2,
                        written: 15
                    }
                ),
            ]
        );
    }
}
