//! Prints the engine's event stream: one line per event on stderr (`error: …`, `warning: …`,
//! steps as plain lines), or with `--json` one JSON object per event with its structured
//! fields, its severity as `message_type` and the human text as `message`. `-q` keeps only
//! errors.
//!
//! [`Event::RestoreStopped`] is not printed: the restore then returns
//! `RestoreError::TargetFull` with the same facts, which the command prints as its one error
//! line, with what to do about it.

use std::io::Write;

use cairn_engine::{Event, Events, Severity};

/// Where printed events go.
#[derive(Clone, Copy)]
pub enum Stream {
    /// Standard error (problems met while doing something else).
    Stderr,
    /// Standard output (`check`, whose findings are its output).
    Stdout,
}

/// The event's JSON form.
pub fn json(e: &Event) -> serde_json::Value {
    let mut v = serde_json::to_value(e).unwrap_or_else(|_| serde_json::json!({}));
    if let Some(o) = v.as_object_mut() {
        o.insert(
            "message_type".into(),
            serde_json::to_value(e.severity()).unwrap_or_default(),
        );
        o.insert("message".into(), e.to_string().into());
    }
    v
}

/// The text line of an event.
pub fn line(e: &Event) -> String {
    match e.severity() {
        Severity::Error => format!("error: {e}"),
        Severity::Warning => format!("warning: {e}"),
        Severity::Info => e.to_string(),
    }
}

/// A sink that prints each event to `stream`.
pub fn printer_to(stream: Stream, json_out: bool, quiet: bool) -> Events {
    Events::new(move |e: Event| {
        if quiet && e.severity() != Severity::Error {
            return;
        }
        if matches!(e, Event::RestoreStopped { .. }) {
            return;
        }
        let text = if json_out {
            json(&e).to_string()
        } else {
            line(&e)
        };
        // A closed pipe is not worth a panic; the command's exit code still says what happened.
        let _ = match stream {
            Stream::Stderr => writeln!(std::io::stderr().lock(), "{text}"),
            Stream::Stdout => writeln!(std::io::stdout().lock(), "{text}"),
        };
    })
}

/// The default printer: stderr.
pub fn printer(json_out: bool, quiet: bool) -> Events {
    printer_to(Stream::Stderr, json_out, quiet)
}
