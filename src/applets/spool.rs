//! `spool [DIR]`: what waits in a spool directory, per direction, read
//! without a daemon (and without its lock: reading changes nothing).
//!
//! ```text
//! for the broker: 300 message(s), 41250 bytes in 1 file(s), oldest 125 s
//! for the delivery socket: nothing waiting
//! ```
//!
//! A line on damage (torn or corrupt records, unreadable files) follows when
//! there is some. Exit 0, or 1 when DIR cannot be read.

use crate::cli::{self, SpoolArgs};
use crate::daemon::store::{self, Direction};
use crate::error::{Error, runtime};
use crate::output::say;

/// Larger length fields are damage: the daemon's largest record (the
/// payload limits of both directions are well below this).
const MAX_PAYLOAD: usize = 256 << 20;

pub fn main(command: &str, args: &[&str]) -> Result<(), Error> {
    let Some(flags) = cli::parse::<SpoolArgs>(command, args)? else {
        return Ok(());
    };
    crate::output::init_tool_logging();
    let found = store::inspect(&flags.dir, MAX_PAYLOAD)
        .map_err(|e| runtime!("cannot read the spool {}: {e}", flags.dir.display()))?;
    let now = store::wall_clock();
    for (direction, r) in found {
        let whom = match direction {
            Direction::Out => "for the broker",
            Direction::In => "for the delivery socket",
        };
        if r.messages == 0 {
            say(&format!(
                "{whom}: nothing waiting ({} bytes in {} file(s))",
                r.bytes, r.segments
            ));
        } else {
            let age = r
                .oldest
                .map(|t| match now.checked_sub(t) {
                    Some(secs) => format!(", oldest {secs} s"),
                    None => ", oldest from the future (the clock was set back)".into(),
                })
                .unwrap_or_default();
            say(&format!(
                "{whom}: {} message(s), {} bytes in {} file(s){age}",
                r.messages, r.bytes, r.segments
            ));
        }
        if r.damaged_bytes > 0 || r.damaged_segments > 0 {
            say(&format!(
                "{whom}: {} damaged byte(s) and {} unreadable file(s), skipped",
                r.damaged_bytes, r.damaged_segments
            ));
        }
    }
    Ok(())
}
