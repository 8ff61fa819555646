//! The server's log format: `tracing` fields with control characters escaped, so no logged value (an identity, a name, a room) can forge a line or send terminal escapes.

use std::fmt::{self, Debug, Write as _};

use tracing::field::Field;
use tracing_subscriber::field::MakeExt;
use tracing_subscriber::fmt::format::{debug_fn, Writer};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

/// `text` with every control character (newline, CR, ESC, ...) written as its Rust escape.
pub fn escape_controls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            let _ = write!(out, "{}", c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

fn field(writer: &mut Writer<'_>, field: &Field, value: &dyn Debug) -> fmt::Result {
    let text = escape_controls(&format!("{value:?}"));
    if field.name() == "message" {
        writer.write_str(&text)
    } else {
        write!(writer, "{}={text}", field.name())
    }
}

/// The subscriber `serve` installs: `filter` (e.g. from `RUST_LOG`), escaped fields, lines to `writer`.
pub fn subscriber<W>(
    filter: EnvFilter,
    writer: W,
    ansi: bool,
) -> impl tracing::Subscriber + Send + Sync
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(writer)
        .fmt_fields(debug_fn(field).delimited(" "))
        .finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_logged_identity_cannot_forge_a_line_or_send_escapes() {
        let buffer = Buffer::default();
        let make = {
            let buffer = buffer.clone();
            move || buffer.clone()
        };
        let subscriber = subscriber(EnvFilter::new("info"), make, false);
        let forged = "ana\n2026-01-01T00:00:00Z ERROR forged: \u{1b}[31mred\r";
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(identity = %forged, name = forged, "joined {}", forged);
        });
        let out = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        assert_eq!(out.lines().count(), 1, "{out:?}");
        assert!(!out.contains('\u{1b}') && !out.contains('\r'), "{out:?}");
        assert!(
            out.contains("identity=ana\\n2026-01-01T00:00:00Z ERROR forged: \\u{1b}[31mred\\r"),
            "{out:?}"
        );
        assert!(out.contains("joined ana\\n"), "{out:?}");
    }

    #[test]
    fn plain_text_is_unchanged() {
        assert_eq!(
            escape_controls("Ana Ruiz — Knox County"),
            "Ana Ruiz — Knox County"
        );
        assert_eq!(escape_controls("a\tb"), "a\\tb");
    }
}
